#include "fs/fuse_fs.h"

#include <dirent.h>
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "backends/backend.h"
#include "catalog/catalog.h"
#include "index/index.h"
#include "tests/gen/gen.h"

namespace bcfs::fs {
namespace {

using ::testing::HasSubstr;

const std::vector<std::string> kForced = {
    "ro", "nosuid", "nodev", "default_permissions", "fsname=buildcachefs", "subtype=buildcachefs"};

std::vector<std::string> Forced(std::vector<std::string> extra) {
  std::vector<std::string> out = kForced;
  out.insert(out.end(), extra.begin(), extra.end());
  return out;
}

TEST(EffectiveOptionsTest, AlwaysReadOnlyNosuidNodev) {
  auto o = EffectiveOptions({});
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(*o, kForced);
}

TEST(EffectiveOptionsTest, PassesAcceptedOptionsInOrderOnce) {
  auto o = EffectiveOptions({"allow_other", "noexec", "ro", "nosuid", "noatime", "allow_other"});
  ASSERT_TRUE(o.ok()) << o.status().message();
  EXPECT_EQ(*o, Forced({"noexec", "noatime", "allow_other"}));
}

TEST(EffectiveOptionsTest, TheLastOfOppositeFlagsWins) {
  auto o = EffectiveOptions({"noexec", "atime", "exec", "noatime"});
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(*o, Forced({"exec", "noatime"}));
}

TEST(EffectiveOptionsTest, IgnoresContraryAndFstabOptions) {
  auto o = EffectiveOptions({"suid", "dev", "rw", "_netdev", "nofail", "noauto", "auto", "user",
                             "users", "nouser", "defaults", "", "x-systemd.automount", "relatime",
                             "strictatime"});
  ASSERT_TRUE(o.ok()) << o.status().message();
  EXPECT_EQ(*o, kForced);
}

TEST(EffectiveOptionsTest, RefusesAnythingElseNamingIt) {
  for (const char* bad : {"debug", "fsname=x", "allow_other=1", "max_read=4096", "blkdev"}) {
    auto o = EffectiveOptions({"ro", bad});
    ASSERT_FALSE(o.ok()) << bad;
    EXPECT_EQ(o.status().code(), Code::kInvalidArgument);
    EXPECT_THAT(o.status().message(), HasSubstr(std::string("\"") + bad + "\""));
  }
}

TEST(EffectiveOptionsTest, AllowOtherAndAllowRootExcludeEachOther) {
  auto o = EffectiveOptions({"allow_root", "allow_other"});
  ASSERT_FALSE(o.ok());
  EXPECT_EQ(o.status().code(), Code::kInvalidArgument);
}

// A generated two-ref cache, its tree, and a mountpoint, all under one
// temporary folder that TearDown removes (unmounting first when a test
// failed half way).
class MountTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/bcfs-fs-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    mnt_ = dir_ + "/mnt";
    ASSERT_EQ(::mkdir(mnt_.c_str(), 0755), 0);
    gen::GenOptions o;
    o.out_dir = dir_ + "/cache";
    o.shape = gen::Shape::kIndex;
    o.refs = 2;
    o.file_size = 200000;  // blobs of a few hundred KiB: several FUSE reads each
    ASSERT_TRUE(gen::Generate(o).ok());
    auto idx = index::Index::Open(":memory:");
    ASSERT_TRUE(idx.ok());
    index_ = std::move(*idx);
    auto spec = backends::ParseSourceString("type=local,src=" + dir_ + "/cache");
    ASSERT_TRUE(spec.ok());
    auto b = backends::OpenBackend(*spec);
    ASSERT_TRUE(b.ok());
    std::shared_ptr<backends::Backend> backend = std::move(*b);
    std::vector<tree::SourceInput> in;
    in.push_back({"cache", backend, catalog::ReadSource(*backend, "cache", "local")});
    auto t = tree::Tree::Build(std::move(in), index_.get());
    ASSERT_TRUE(t.ok()) << t.status().message();
    tree_ = std::move(*t);
  }

  void TearDown() override {
    if (server_.joinable()) {
      ::umount2(mnt_.c_str(), MNT_DETACH);
      server_.join();
    }
    tree_.reset();
    std::filesystem::remove_all(dir_);
  }

  // True when this machine can mount FUSE file systems directly.
  static bool CanMount() {
    if (::geteuid() != 0) return false;
    int fd = ::open("/dev/fuse", O_RDWR | O_CLOEXEC);
    if (fd < 0) return false;
    ::close(fd);
    return true;
  }

  // Serves the tree on a thread; returns once the mount answers.
  void Mount() {
    std::promise<void> ready;
    std::future<void> ready_f = ready.get_future();
    server_ = std::thread([this, &ready] {
      served_ = ServeMount(*tree_, MountOptions{mnt_, {}, false}, [&ready] { ready.set_value(); });
    });
    ASSERT_EQ(ready_f.wait_for(std::chrono::seconds(20)), std::future_status::ready)
        << "mount did not become ready";
  }

  Status Unmount() {
    EXPECT_EQ(::umount2(mnt_.c_str(), 0), 0) << std::strerror(errno);
    server_.join();
    return served_;
  }

  std::string Path(const std::string& rel) const { return mnt_ + "/" + rel; }

  static std::string Slurp(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }

  // The first blob file of the source, by name.
  std::string SomeBlob() const {
    std::set<std::string> names;
    for (const auto& e : std::filesystem::directory_iterator(dir_ + "/cache/blobs/sha256")) {
      names.insert(e.path().filename().string());
    }
    return names.empty() ? "" : *names.begin();
  }

  std::string dir_, mnt_;
  std::unique_ptr<index::Index> index_;
  std::unique_ptr<tree::Tree> tree_;
  std::thread server_;
  Status served_;
};

TEST_F(MountTest, MissingMountpointIsNotFoundNamingIt) {
  Status st = ServeMount(*tree_, MountOptions{dir_ + "/absent", {}, false}, nullptr);
  EXPECT_EQ(st.code(), Code::kNotFound);
  EXPECT_THAT(st.message(), HasSubstr(dir_ + "/absent"));
}

TEST_F(MountTest, MountpointThatIsAFileIsInvalid) {
  const std::string file = dir_ + "/cache/oci-layout";
  Status st = ServeMount(*tree_, MountOptions{file, {}, false}, nullptr);
  EXPECT_EQ(st.code(), Code::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr(file));
}

TEST_F(MountTest, RefusedOptionMountsNothing) {
  Status st = ServeMount(*tree_, MountOptions{mnt_, {"debug"}, false}, nullptr);
  EXPECT_EQ(st.code(), Code::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("\"debug\""));
}

TEST_F(MountTest, ServesTheTreeReadOnlyAndUnmountsCleanly) {
  if (!CanMount()) GTEST_SKIP() << "needs root and /dev/fuse";
  Mount();

  struct stat root {};
  ASSERT_EQ(::stat(mnt_.c_str(), &root), 0);
  EXPECT_EQ(root.st_ino, tree::Tree::kRootIno);
  EXPECT_EQ(root.st_mode, S_IFDIR | 0555);

  std::set<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(mnt_)) {
    names.insert(e.path().filename().string());
  }
  EXPECT_EQ(names, (std::set<std::string>{".buildcachefs", "cache"}));

  // "." and ".." carry the right inode numbers.
  struct stat refs {
  }, latest{};
  ASSERT_EQ(::stat(Path("cache/refs").c_str(), &refs), 0);
  ASSERT_EQ(::stat(Path("cache/refs/latest").c_str(), &latest), 0);
  DIR* d = ::opendir(Path("cache/refs/latest").c_str());
  ASSERT_NE(d, nullptr);
  std::map<std::string, ino_t> inos;
  while (dirent* e = ::readdir(d)) inos[e->d_name] = e->d_ino;
  ::closedir(d);
  EXPECT_EQ(inos["."], latest.st_ino);
  EXPECT_EQ(inos[".."], refs.st_ino);
  EXPECT_EQ(inos.count("manifest.json"), 1u);

  // Blob bytes come through unchanged, spliced or not.
  const std::string blob = SomeBlob();
  ASSERT_FALSE(blob.empty());
  const std::string want = Slurp(dir_ + "/cache/blobs/sha256/" + blob);
  EXPECT_EQ(Slurp(Path("cache/blobs/sha256/" + blob)), want);
  struct stat bst {};
  ASSERT_EQ(::stat(Path("cache/blobs/sha256/" + blob).c_str(), &bst), 0);
  EXPECT_EQ(bst.st_mode, S_IFREG | 0444);
  EXPECT_EQ(static_cast<size_t>(bst.st_size), want.size());
  EXPECT_EQ(bst.st_blocks, static_cast<blkcnt_t>((want.size() + 511) / 512));

  // Layer links point into layers/.
  std::string link;
  for (const auto& e : std::filesystem::directory_iterator(Path("cache/refs/latest/layers"))) {
    link = std::filesystem::read_symlink(e.path()).string();
    break;
  }
  EXPECT_EQ(link.rfind("../../../layers/sha256/", 0), 0u) << link;

  // Extended attributes: size probe, exact read, too small, missing.
  const std::string bpath = Path("cache/blobs/sha256/" + blob);
  const std::string digest = "sha256:" + blob;
  EXPECT_EQ(::getxattr(bpath.c_str(), "user.buildcachefs.digest", nullptr, 0),
            static_cast<ssize_t>(digest.size()));
  char buf[128];
  ssize_t n = ::getxattr(bpath.c_str(), "user.buildcachefs.digest", buf, sizeof buf);
  ASSERT_GT(n, 0);
  EXPECT_EQ(std::string(buf, static_cast<size_t>(n)), digest);
  EXPECT_EQ(::getxattr(bpath.c_str(), "user.buildcachefs.digest", buf, 4), -1);
  EXPECT_EQ(errno, ERANGE);
  const uint64_t enodata_before = ErrorCounts()[ENODATA];
  EXPECT_EQ(::getxattr(bpath.c_str(), "user.nothing", buf, sizeof buf), -1);
  EXPECT_EQ(errno, ENODATA);
  EXPECT_EQ(ErrorCounts()[ENODATA], enodata_before + 1);
  ssize_t list_len = ::listxattr(bpath.c_str(), nullptr, 0);
  ASSERT_GT(list_len, 0);
  std::string list(static_cast<size_t>(list_len), '\0');
  ASSERT_EQ(::listxattr(bpath.c_str(), list.data(), list.size()), list_len);
  EXPECT_NE(list.find(std::string("user.buildcachefs.digest\0", 25)), std::string::npos);

  // Nothing can be written.
  EXPECT_EQ(::open(bpath.c_str(), O_WRONLY), -1);
  EXPECT_EQ(errno, EROFS);
  EXPECT_EQ(::mkdir(Path("cache/ingest/x").c_str(), 0755), -1);
  EXPECT_EQ(errno, EROFS);
  EXPECT_EQ(::setxattr(bpath.c_str(), "user.x", "1", 1, 0), -1);
  EXPECT_EQ(errno, EROFS);

  // BuildKit's importer: open index.json.lock with O_CREAT and flock it.
  int lock = ::open(Path("cache/index.json.lock").c_str(), O_CREAT | O_RDONLY, 0644);
  ASSERT_GE(lock, 0) << std::strerror(errno);
  EXPECT_EQ(::flock(lock, LOCK_EX), 0) << std::strerror(errno);
  ::close(lock);

  struct statvfs vfs {};
  ASSERT_EQ(::statvfs(mnt_.c_str(), &vfs), 0);
  EXPECT_EQ(vfs.f_files, tree_->NodeCount());
  EXPECT_EQ(vfs.f_namemax, 255u);
  EXPECT_NE(vfs.f_flag & ST_RDONLY, 0u);
  EXPECT_NE(vfs.f_flag & ST_NOSUID, 0u);
  EXPECT_NE(vfs.f_flag & ST_NODEV, 0u);

  Status st = Unmount();
  EXPECT_TRUE(st.ok()) << st.message();
}

TEST_F(MountTest, SigtermUnmountsEvenWithFilesOpen) {
  if (!CanMount()) GTEST_SKIP() << "needs root and /dev/fuse";
  Mount();
  int fd = ::open(Path("cache/index.json").c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  DIR* d = ::opendir(Path("cache/blobs/sha256").c_str());
  ASSERT_NE(d, nullptr);
  // libfuse's handler stops the loop in the thread that runs it; no release
  // will ever come for the two open handles, so the adapter must free them
  // (the sanitizer build reports them otherwise).
  ASSERT_EQ(::pthread_kill(server_.native_handle(), SIGTERM), 0);
  server_.join();
  EXPECT_TRUE(served_.ok()) << served_.message();
  std::ifstream mountinfo("/proc/self/mountinfo");
  std::string line;
  while (std::getline(mountinfo, line)) {
    EXPECT_EQ(line.find(" " + mnt_ + " "), std::string::npos) << line;
  }
  ::close(fd);
  ::closedir(d);
}

}  // namespace
}  // namespace bcfs::fs
