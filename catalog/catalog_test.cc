#include "catalog/catalog.h"

#include <gtest/gtest.h>

namespace bcfs::catalog {
namespace {

Digest D(const std::string& seed) { return Digest::Sha256Of(seed); }

// A source of two readable refs sharing a layer.
SourceInfo TwoRefs() {
  SourceInfo info;
  info.name = "c";
  info.type = "local";
  info.location = "/caches/c";
  for (const std::string name : {"latest", "main"}) {
    RefInfo r;
    r.name = name;
    r.shape = "image-manifest";
    r.media_type = "application/vnd.oci.image.manifest.v1+json";
    r.descriptor.digest = D("manifest-" + name);
    r.descriptor.size = 100;
    r.config.digest = D("config-" + name);
    r.config.size = 50;
    for (const std::string& layer : {std::string("base"), "top-" + name}) {
      LayerInfo l;
      l.blob = D(layer);
      l.size = 1000;
      l.media_type = "application/vnd.oci.image.layer.v1.tar+gzip";
      r.layers.push_back(l);
    }
    info.refs.push_back(r);
  }
  return info;
}

std::vector<std::string> RefNames(index::Index& idx) {
  std::vector<std::string> names;
  auto snap = idx.LoadSource("c");
  if (snap.ok()) {
    for (const auto& r : snap->refs) names.push_back(r.name);
  }
  return names;
}

TEST(RecordSource, AKeyAlreadyStoredOnlyUpdatesTheRefreshTimeAnyOtherStoresTheSnapshot) {
  auto opened = index::Index::Open(":memory:");
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  index::Index& idx = **opened;
  ASSERT_TRUE(RecordSource(idx, TwoRefs(), "fp-1", 10).ok());
  EXPECT_EQ(RefNames(idx), (std::vector<std::string>{"latest", "main"}));
  EXPECT_EQ(idx.LoadSource("c")->blobs.size(), 7u);  // 2 manifests, 2 configs, 3 layers

  // The same key vouches for the stored rows: the snapshot is not even made
  // (here it would say something else), only the time changes.
  SourceInfo one = TwoRefs();
  one.refs.pop_back();
  ASSERT_TRUE(RecordSource(idx, one, "fp-1", 20).ok());
  EXPECT_EQ(RefNames(idx), (std::vector<std::string>{"latest", "main"}));
  EXPECT_EQ(idx.LoadSource("c")->refreshed, 20);

  // Another key, or none, stores what `info` says.
  ASSERT_TRUE(RecordSource(idx, one, "fp-2", 30).ok());
  EXPECT_EQ(RefNames(idx), std::vector<std::string>{"latest"});
  EXPECT_EQ(idx.LoadSource("c")->blobs.size(), 4u);
  ASSERT_TRUE(RecordSource(idx, TwoRefs(), "", 40).ok());
  EXPECT_EQ(RefNames(idx), (std::vector<std::string>{"latest", "main"}));
  EXPECT_EQ(idx.LoadSource("c")->refreshed, 40);

  // A read with errors is stored by content, never under a key: the next
  // read under the same key stores what it says.
  SourceInfo failed = one;
  failed.refs[0].errors.push_back("manifest unreadable");
  ASSERT_TRUE(RecordSource(idx, failed, "fp-4", 50).ok());
  EXPECT_EQ(RefNames(idx), std::vector<std::string>{"latest"});
  ASSERT_TRUE(RecordSource(idx, TwoRefs(), "fp-4", 60).ok());
  EXPECT_EQ(RefNames(idx), (std::vector<std::string>{"latest", "main"}));
}

}  // namespace
}  // namespace bcfs::catalog
