#include "gc/policy.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace bcfs::gc {
namespace {

using ::testing::HasSubstr;

constexpr int64_t kMi = int64_t{1} << 20, kGi = int64_t{1} << 30;

GcConfig Parse(std::string_view text) {
  auto r = ParseGcConfig(text, "test.toml");
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? *r : GcConfig{};
}

std::string ParseError(std::string_view text) {
  auto r = ParseGcConfig(text, "test.toml");
  EXPECT_FALSE(r.ok());
  if (!r.ok()) {
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  }
  return r.ok() ? std::string() : r.status().message();
}

Item ItemWithRole(Role role) {
  Item it;
  it.role = role;
  return it;
}

// The complete example of BuildKit's docs/buildkitd.toml.md, pasted unchanged.
constexpr std::string_view kBuildkitdDocsExample = R"toml(
# root is where all buildkit state is stored.
root = "/var/lib/buildkit"
# insecure-entitlements allows insecure entitlements, disabled by default.
insecure-entitlements = [ "network.host", "security.insecure", "device" ]
# proxyNetwork enables proxy network enforcement for all builds, disabled by default.
# It can also be enabled with buildkitd --proxy-network.
proxyNetwork = true
# provenanceEnvDir is the directory where extra config is loaded that is added
# to the provenance of builds:
# slsa v0.2: invocation.environment.*
# slsa v1: buildDefinition.internalParameters.*
provenanceEnvDir = "/etc/buildkit/provenance.d"

[log]
  # log formatter: json or text
  format = "text"

  # log level (error/warn/info/debug/trace)
  level = "info"

[dns]
  nameservers=["1.1.1.1","8.8.8.8"]
  options=["edns0"]
  searchDomains=["example.com"]

[grpc]
  address = [ "tcp://0.0.0.0:1234" ]
  # debugAddress is address for attaching go profiles and debuggers.
  debugAddress = "0.0.0.0:6060"
  uid = 0
  gid = 0
  [grpc.tls]
    cert = "/etc/buildkit/tls.crt"
    key = "/etc/buildkit/tls.key"
    ca = "/etc/buildkit/tlsca.crt"

[otel]
  # OTEL collector trace socket path
  socketPath = "/run/buildkit/otel-grpc.sock"

[cdi]
  # Disables support of the Container Device Interface (CDI).
  disabled = true
  # List of directories to scan for CDI spec files. For more details about CDI
  # specification, please refer to https://github.com/cncf-tags/container-device-interface/blob/main/SPEC.md#cdi-json-specification
  specDirs = ["/etc/cdi", "/var/run/cdi", "/etc/buildkit/cdi"]

# config for build history API that stores information about completed build commands
[history]
  # maxAge is the maximum age of history entries to keep, in seconds.
  maxAge = 172800
  # maxEntries is the maximum number of history entries to keep.
  maxEntries = 50

[worker.oci]
  enabled = true
  # platforms is manually configure platforms, detected automatically if unset.
  platforms = [ "linux/amd64", "linux/arm64" ]
  snapshotter = "auto" # overlayfs or native, default value is "auto".
  rootless = false # see docs/rootless.md for the details on rootless mode.
  # Whether run subprocesses in main pid namespace or not, this is useful for
  # running rootless buildkit inside a container.
  noProcessSandbox = false
  # gc enables/disables garbage collection
  gc = true
  # reservedSpace is the minimum amount of disk space guaranteed to be
  # retained by this buildkit worker - any usage below this threshold will not
  # be reclaimed during garbage collection.
  # all disk space parameters can be an integer number of bytes (e.g.
  # 512000000), a string with a unit (e.g. "512MB"), or a string percentage
  # of the total disk space (e.g. "10%")
  reservedSpace = "30%"
  # maxUsedSpace is the maximum amount of disk space that may be used by
  # this buildkit worker - any usage above this threshold will be reclaimed
  # during garbage collection.
  maxUsedSpace = "60%"
  # minFreeSpace is the target amount of free disk space that the garbage
  # collector will attempt to leave - however, it will never be bought below
  # reservedSpace.
  minFreeSpace = "20GB"
  # alternate OCI worker binary name(example 'crun'), by default either 
  # buildkit-runc or runc binary is used
  binary = ""
  # name of the apparmor profile that should be used to constrain build containers.
  # the profile should already be loaded (by a higher level system) before creating a worker.
  apparmor-profile = ""
  # limit the number of parallel build steps that can run at the same time
  max-parallelism = 4
  # maintain a pool of reusable CNI network namespaces to amortize the overhead
  # of allocating and releasing the namespaces
  cniPoolSize = 16

  [worker.oci.labels]
    "foo" = "bar"

  [[worker.oci.gcpolicy]]
    # reservedSpace is the minimum amount of disk space guaranteed to be
    # retained by this policy - any usage below this threshold will not be
    # reclaimed during # garbage collection.
    reservedSpace = "512MB"
    # maxUsedSpace is the maximum amount of disk space that may be used by this
    # policy - any usage above this threshold will be reclaimed during garbage
    # collection.
    maxUsedSpace = "1GB"
    # minFreeSpace is the target amount of free disk space that the garbage
    # collector will attempt to leave - however, it will never be bought below
    # reservedSpace.
    minFreeSpace = "10GB"
    # keepDuration can be an integer number of seconds (e.g. 172800), or a
    # string duration (e.g. "48h")
    keepDuration = "48h"
    filters = [ "type==source.local", "type==exec.cachemount", "type==source.git.checkout"]
  [[worker.oci.gcpolicy]]
    all = true
    reservedSpace = 1024000000

[worker.containerd]
  address = "/run/containerd/containerd.sock"
  enabled = true
  platforms = [ "linux/amd64", "linux/arm64" ]
  namespace = "buildkit"

  # gc enables/disables garbage collection
  gc = true
  # reservedSpace is the minimum amount of disk space guaranteed to be
  # retained by this buildkit worker - any usage below this threshold will not
  # be reclaimed during garbage collection.
  # all disk space parameters can be an integer number of bytes (e.g.
  # 512000000), a string with a unit (e.g. "512MB"), or a string percentage
  # of the total disk space (e.g. "10%")
  reservedSpace = "30%"
  # maxUsedSpace is the maximum amount of disk space that may be used by
  # this buildkit worker - any usage above this threshold will be reclaimed
  # during garbage collection.
  maxUsedSpace = "60%"
  # minFreeSpace is the target amount of free disk space that the garbage
  # collector will attempt to leave - however, it will never be bought below
  # reservedSpace.
  minFreeSpace = "20GB"
  # limit the number of parallel build steps that can run at the same time
  max-parallelism = 4
  # maintain a pool of reusable CNI network namespaces to amortize the overhead
  # of allocating and releasing the namespaces
  cniPoolSize = 16
  # defaultCgroupParent sets the parent cgroup of all containers.
  defaultCgroupParent = "buildkit"

  [worker.containerd.labels]
    "foo" = "bar"

  # configure the containerd runtime
  [worker.containerd.runtime]
    name = "io.containerd.runc.v2"
    path = "/path/to/containerd/runc/shim"
    options = { BinaryName = "runc" }

  [[worker.containerd.gcpolicy]]
    reservedSpace = 512000000
    keepDuration = 172800
    filters = [ "type==source.local", "type==exec.cachemount", "type==source.git.checkout"]
  [[worker.containerd.gcpolicy]]
    all = true
    reservedSpace = 1024000000

# registry configures a new Docker register used for cache import or output.
[registry."docker.io"]
  # mirror configuration to handle path in case a mirror registry requires a /project path rather than just a host:port
  mirrors = ["yourmirror.local:5000", "core.harbor.domain/proxy.docker.io"]
  # Use plain HTTP to connect to the mirrors.
  http = true
  # Use HTTPS with self-signed certificates. Do not enable this together with `http`.
  insecure = true
  # If you use token auth with self-signed certificates,
  # then buildctl also needs to trust the token provider CA (for example, certificates that are configured for registry)
  # because buildctl pulls tokens directly without daemon process
  ca=["/etc/config/myca.pem"]
  [[registry."docker.io".keypair]]
    key="/etc/config/key.pem"
    cert="/etc/config/cert.pem"

# optionally mirror configuration can be done by defining it as a registry.
[registry."yourmirror.local:5000"]
  http = true

# Frontend control
[frontend."dockerfile.v0"]
  enabled = true

[frontend."gateway.v0"]
  enabled = true
  # If allowedRepositories is empty, all gateway sources are allowed.
  # Otherwise, only the listed repositories are allowed as a gateway source.
  # 
  # NOTE: Only the repository name (without tag) is compared.
  #
  # Example:
  # allowedRepositories = [ "docker-registry.wikimedia.org/repos/releng/blubber/buildkit" ]
  allowedRepositories = []

[system]
  # how often buildkit scans for changes in the supported emulated platforms
  platformsCacheMaxAge = "1h"
  # maxRegistryConcurrency sets the maximum number of concurrent connections
  # per registry. If unset, the default concurrency limit is used.
  maxRegistryConcurrency = 4


# optional signed cache configuration for GitHub Actions backend
[ghacache.sign]
# command that signs the payload in stdin and outputs the signature to stdout. Normally you want cosign to produce the signature bytes.
cmd = ""
[ghacache.verify]
required = false
[ghacache.verify.policy]
timestampThreshold = 1
tlogThreshold = 1
# cetificate properties that need to match. Simple wildcards (*) are supported.
certificateIssuer = ""
subjectAlternativeName = ""
buildSignerURI = ""
)toml";

TEST(GcConfig, BuildkitdDocsExampleIsAcceptedAsIs) {
  GcConfig cfg = Parse(kBuildkitdDocsExample);
  EXPECT_EQ(cfg.table, "worker.oci");
  EXPECT_TRUE(cfg.enabled);
  EXPECT_EQ(cfg.reserved_space, DiskSpace::Percent(30));
  EXPECT_EQ(cfg.max_used_space, DiskSpace::Percent(60));
  EXPECT_EQ(cfg.min_free_space, DiskSpace::Bytes(20 * kGi));
  ASSERT_EQ(cfg.policies.size(), 2u);
  const Policy& p0 = cfg.policies[0];
  EXPECT_EQ(p0.reserved_space, DiskSpace::Bytes(512 * kMi));
  EXPECT_EQ(p0.max_used_space, DiskSpace::Bytes(kGi));
  EXPECT_EQ(p0.min_free_space, DiskSpace::Bytes(10 * kGi));
  EXPECT_EQ(p0.keep_duration, 48 * kHour);
  EXPECT_FALSE(p0.all);
  EXPECT_EQ(p0.filters, (std::vector<std::string>{"type==source.local", "type==exec.cachemount",
                                                  "type==source.git.checkout"}));
  // No item has a BuildKit record type: the policy selects nothing.
  for (Role r : {Role::kLayer, Role::kConfig, Role::kManifest, Role::kDerived}) {
    EXPECT_FALSE(p0.filter.Matches(ItemWithRole(r)));
  }
  ASSERT_EQ(cfg.warnings.size(), 3u);
  EXPECT_EQ(cfg.warnings[0],
            "test.toml:113: worker.oci.gcpolicy[0].filters: filter \"type==source.local\": "
            "BuildKit record types do not exist in a remote cache; this selector matches nothing "
            "here");
  const Policy& p1 = cfg.policies[1];
  EXPECT_TRUE(p1.all);
  EXPECT_EQ(p1.reserved_space, DiskSpace::Bytes(1'024'000'000));
  EXPECT_TRUE(p1.max_used_space.unset());
  EXPECT_TRUE(p1.min_free_space.unset());
  EXPECT_EQ(p1.keep_duration, 0);
  EXPECT_TRUE(p1.filter.MatchesEverything());
  EXPECT_EQ(EffectivePolicies(cfg, FsStats{}).size(), 2u);
}

TEST(GcConfig, ContainerdWorkerTableWithIntegerSecondsAndBytes) {
  GcConfig cfg = Parse(R"toml(
[worker.containerd]
  gc = true
  [[worker.containerd.gcpolicy]]
    reservedSpace = 512000000
    keepDuration = 172800
  [[worker.containerd.gcpolicy]]
    all = true
    keepBytes = "2GB"
)toml");
  EXPECT_EQ(cfg.table, "worker.containerd");
  ASSERT_EQ(cfg.policies.size(), 2u);
  EXPECT_EQ(cfg.policies[0].reserved_space, DiskSpace::Bytes(512'000'000));
  EXPECT_EQ(cfg.policies[0].keep_duration, 172'800 * kSecond);
  EXPECT_EQ(cfg.policies[1].reserved_space, DiskSpace::Bytes(2 * kGi));  // keepBytes
}

TEST(GcConfig, OurTableWithEveryKeyCamelCase) {
  GcConfig cfg = Parse(R"toml(
[gc]
enabled = true
reservedSpace = "5GB"
[[gc.policy]]
keepDuration = "1h30m"
reservedSpace = "512MB"
maxUsedSpace = "1GB"
minFreeSpace = "10%"
filters = ["role==layer", "source==a,ref==main"]
all = true
)toml");
  EXPECT_EQ(cfg.table, "gc");
  EXPECT_EQ(cfg.reserved_space, DiskSpace::Bytes(5 * kGi));
  ASSERT_EQ(cfg.policies.size(), 1u);
  const Policy& p = cfg.policies[0];
  EXPECT_EQ(p.keep_duration, 90 * 60 * kSecond);
  EXPECT_EQ(p.reserved_space, DiskSpace::Bytes(512 * kMi));
  EXPECT_EQ(p.max_used_space, DiskSpace::Bytes(kGi));
  EXPECT_EQ(p.min_free_space, DiskSpace::Percent(10));
  EXPECT_TRUE(p.all);
  ASSERT_EQ(p.filter.alternatives().size(), 2u);
  EXPECT_EQ(p.filter.alternatives()[1].size(), 2u);
  EXPECT_TRUE(cfg.warnings.empty());
}

TEST(GcConfig, SnakeCaseAliases) {
  GcConfig cfg = Parse(R"toml(
[gc]
reserved_space = 1000
max_used_space = "2GiB"
min_free_space = "20%"
gc_keep_storage = "1GB"
[[gc.policy]]
keep_duration = 172800
reserved_space = 1024000000
max_used_space = "2GiB"
min_free_space = "20%"
[[gc.policy]]
keep_bytes = "3MB"
)toml");
  EXPECT_EQ(cfg.reserved_space, DiskSpace::Bytes(1000));
  EXPECT_EQ(cfg.max_used_space, DiskSpace::Bytes(2 * kGi));
  EXPECT_EQ(cfg.min_free_space, DiskSpace::Percent(20));
  EXPECT_EQ(cfg.keep_storage, DiskSpace::Bytes(kGi));
  ASSERT_EQ(cfg.policies.size(), 2u);
  EXPECT_EQ(cfg.policies[0].keep_duration, 48 * kHour);
  EXPECT_EQ(cfg.policies[0].reserved_space, DiskSpace::Bytes(1'024'000'000));
  EXPECT_EQ(cfg.policies[0].max_used_space, DiskSpace::Bytes(2 * kGi));
  EXPECT_EQ(cfg.policies[0].min_free_space, DiskSpace::Percent(20));
  EXPECT_EQ(cfg.policies[1].reserved_space, DiskSpace::Bytes(3 * kMi));
}

TEST(GcConfig, KeepBytesOnlyFillsAnUnsetReservedSpace) {
  GcConfig cfg = Parse(R"toml(
[[gc.policy]]
keepBytes = "3MB"
reservedSpace = "1MB"
)toml");
  ASSERT_EQ(cfg.policies.size(), 1u);
  EXPECT_EQ(cfg.policies[0].reserved_space, DiskSpace::Bytes(kMi));
}

TEST(GcConfig, EmptyStringsAreUnset) {
  GcConfig cfg = Parse("[[gc.policy]]\nkeepDuration = \"\"\nmaxUsedSpace = \"\"\n");
  ASSERT_EQ(cfg.policies.size(), 1u);
  EXPECT_EQ(cfg.policies[0].keep_duration, 0);
  EXPECT_TRUE(cfg.policies[0].max_used_space.unset());
  EXPECT_FALSE(cfg.policies[0].has_space_limits());
}

TEST(GcConfig, BadValuesNameFileLineKeyAndValue) {
  EXPECT_EQ(ParseError("[[gc.policy]]\nkeepDuration = \"2 days\"\n"),
            "test.toml:2: gc.policy[0].keepDuration: invalid duration \"2 days\": neither a Go "
            "duration (\"48h\") nor integer seconds");
  EXPECT_EQ(ParseError("[[gc.policy]]\nmaxUsedSpace = \"1XB\"\n"),
            "test.toml:2: gc.policy[0].maxUsedSpace: invalid size \"1XB\": expected bytes or a "
            "number with a binary unit (\"512MB\" = 512 MiB, \"1GB\", \"32k\")");
  EXPECT_EQ(ParseError("[[gc.policy]]\nreservedSpace = -1\n"),
            "test.toml:2: gc.policy[0].reservedSpace: invalid size -1: negative");
  EXPECT_EQ(ParseError("[[gc.policy]]\nminFreeSpace = \"150%\"\n"),
            "test.toml:2: gc.policy[0].minFreeSpace: invalid disk space \"150%\": a percentage is "
            "a whole number from 0 to 100");
  EXPECT_EQ(ParseError("[[gc.policy]]\nkeepDuration = 1.5\n"),
            "test.toml:2: gc.policy[0].keepDuration: expected a duration (\"48h\" or integer "
            "seconds), got a float 1.5");
  EXPECT_EQ(ParseError("[[gc.policy]]\nkeepDuration = -10\n"),
            "test.toml:2: gc.policy[0].keepDuration: invalid duration -10: out of range");
  EXPECT_EQ(ParseError("[[gc.policy]]\nall = \"yes\"\n"),
            "test.toml:2: gc.policy[0].all: expected true or false, got a string \"yes\"");
  EXPECT_EQ(ParseError("[[gc.policy]]\nfilters = \"role==layer\"\n"),
            "test.toml:2: gc.policy[0].filters: expected an array of filter strings, got a "
            "string \"role==layer\"");
  EXPECT_EQ(ParseError("[[gc.policy]]\nfilters = [1]\n"),
            "test.toml:2: gc.policy[0].filters[0]: expected a string, got an integer 1");
  EXPECT_EQ(ParseError("[[gc.policy]]\nfilters = [\"role==blob\"]\n"),
            "test.toml:2: gc.policy[0].filters: filter \"role==blob\": role \"blob\" is not one "
            "of layer, config, manifest, derived");
  EXPECT_EQ(ParseError("[[gc.policy]]\nmaxUsedSpace = true\n"),
            "test.toml:2: gc.policy[0].maxUsedSpace: expected a size (bytes, \"512MB\" or "
            "\"10%\"), got a boolean true");
  EXPECT_EQ(ParseError("[worker.oci]\nreservedSpace = \"lots\"\n"),
            "test.toml:2: worker.oci.reservedSpace: invalid size \"lots\": expected bytes or a "
            "number with a binary unit (\"512MB\" = 512 MiB, \"1GB\", \"32k\")");
  EXPECT_EQ(ParseError("[gc]\nenabled = 1\n"),
            "test.toml:2: gc.enabled: expected true or false, got an integer 1");
}

TEST(GcConfig, TypeFiltersAreRefusedInOurTable) {
  EXPECT_EQ(ParseError("[[gc.policy]]\nfilters = [\"type==exec.cachemount\"]\n"),
            "test.toml:2: gc.policy[0].filters: filter \"type==exec.cachemount\": field \"type\": "
            "BuildKit record types do not exist in a remote cache");
}

TEST(GcConfig, UnknownAndDuplicateKeysAreRefused) {
  EXPECT_EQ(ParseError("[[gc.policy]]\nkeepStorage = 1\n"),
            "test.toml:2: gc.policy[0].keepStorage: unknown key (a policy has keepDuration, "
            "reservedSpace, maxUsedSpace, minFreeSpace, filters, all, keepBytes)");
  EXPECT_THAT(ParseError("[gc]\nfoo = 1\n"), HasSubstr("test.toml:2: gc.foo: unknown key"));
  EXPECT_EQ(ParseError("[[gc.policy]]\nkeepDuration = \"1h\"\nkeep_duration = \"2h\"\n"),
            "test.toml:3: gc.policy[0].keep_duration: given twice (as keepDuration and "
            "keep_duration)");
  EXPECT_THAT(ParseError("[[worker.oci.gcpolicy]]\nbogus = 1\n"),
              HasSubstr("worker.oci.gcpolicy[0].bogus: unknown key"));
  EXPECT_THAT(ParseError("gc = 1\n"), HasSubstr("test.toml:1: gc: expected a table"));
  EXPECT_THAT(ParseError("[gc]\npolicy = 1\n"),
              HasSubstr("gc.policy: expected an array of tables ([[gc.policy]])"));
}

TEST(GcConfig, BadTomlNamesFileAndPosition) {
  EXPECT_THAT(ParseError("[gc]\n[[gc.policy]\n"), HasSubstr("test.toml:2:"));
  EXPECT_THAT(ParseError("[gc]\n[[gc.policy]\n"), HasSubstr("bad TOML"));
  EXPECT_THAT(ParseError("a = \n"), HasSubstr("test.toml:1:"));
}

TEST(GcConfig, NoTablesMeansDefaultsAndDisabledMeansNone) {
  GcConfig none = Parse("root = \"/var/lib/buildkit\"\n[worker.oci]\nsnapshotter = \"auto\"\n");
  EXPECT_EQ(none.table, "");
  EXPECT_TRUE(none.policies.empty());
  EXPECT_EQ(EffectivePolicies(none, FsStats{}).size(), 4u);
  GcConfig off = Parse("[gc]\nenabled = false\n[[gc.policy]]\nall = true\n");
  EXPECT_FALSE(off.enabled);
  EXPECT_TRUE(EffectivePolicies(off, FsStats{}).empty());
  GcConfig bk_off = Parse("[worker.oci]\ngc = false\n");
  EXPECT_FALSE(bk_off.enabled);
  EXPECT_TRUE(EffectivePolicies(bk_off, FsStats{}).empty());
}

TEST(GcConfig, OurTableWinsOverWorkerTables) {
  GcConfig cfg = Parse("[worker.oci]\nreservedSpace = 1\n[gc]\nreservedSpace = 2\n");
  EXPECT_EQ(cfg.table, "gc");
  EXPECT_EQ(cfg.reserved_space, DiskSpace::Bytes(2));
}

TEST(GcConfig, LoadGcConfigReportsAMissingFile) {
  auto r = LoadGcConfig("/nonexistent/buildcachefs-gc.toml");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kNotFound);
  EXPECT_THAT(r.status().message(), HasSubstr("/nonexistent/buildcachefs-gc.toml"));
}

TEST(DefaultPolicies, FourRulesOnA100GiBDisk) {
  const FsStats fs{100 * uint64_t{1} << 30, 0};
  std::vector<Policy> p = DefaultPolicies(GcConfig{}, fs);
  ASSERT_EQ(p.size(), 4u);
  // Rule 1: derived copies unused for 48h, while the store is over 512e6.
  EXPECT_EQ(p[0].filters, std::vector<std::string>{"role==derived"});
  EXPECT_TRUE(p[0].filter.Matches(ItemWithRole(Role::kDerived)));
  EXPECT_FALSE(p[0].filter.Matches(ItemWithRole(Role::kLayer)));
  EXPECT_EQ(p[0].keep_duration, 48 * kHour);
  EXPECT_EQ(p[0].max_used_space, DiskSpace::Bytes(512'000'000));
  EXPECT_TRUE(p[0].reserved_space.unset());
  EXPECT_TRUE(p[0].min_free_space.unset());
  EXPECT_FALSE(p[0].all);
  // 10% = 11e9 > 10e9: capped; 80% = 81e9 ≤ 100e9: kept as a percentage.
  for (size_t i = 1; i < 4; ++i) {
    EXPECT_EQ(p[i].reserved_space, DiskSpace::Bytes(10'000'000'000)) << i;
    EXPECT_EQ(p[i].max_used_space, DiskSpace::Percent(80)) << i;
    EXPECT_EQ(p[i].min_free_space, DiskSpace::Percent(20)) << i;
    EXPECT_TRUE(p[i].filter.MatchesEverything()) << i;
    EXPECT_EQ(p[i].max_used_space.AsBytes(fs), 81'000'000'000);
    EXPECT_EQ(p[i].min_free_space.AsBytes(fs), 21'000'000'000);
  }
  EXPECT_EQ(p[1].keep_duration, 1440 * kHour);
  EXPECT_EQ(p[2].keep_duration, 0);
  EXPECT_EQ(p[3].keep_duration, 0);
  EXPECT_FALSE(p[1].all);
  EXPECT_FALSE(p[2].all);
  EXPECT_TRUE(p[3].all);
}

TEST(DefaultPolicies, CapsOnABigDiskAndTwoGbWhenTheDiskIsUnknown) {
  std::vector<Policy> big = DefaultPolicies(GcConfig{}, FsStats{uint64_t{2} << 40, 0});
  EXPECT_EQ(big[1].reserved_space, DiskSpace::Bytes(10'000'000'000));
  EXPECT_EQ(big[1].max_used_space, DiskSpace::Bytes(100'000'000'000));
  EXPECT_EQ(big[1].min_free_space, DiskSpace::Percent(20));
  EXPECT_EQ(big[1].min_free_space.AsBytes(FsStats{uint64_t{2} << 40, 0}), 410'000'000'000);
  std::vector<Policy> unknown = DefaultPolicies(GcConfig{}, FsStats{});
  EXPECT_EQ(unknown[2].reserved_space, DiskSpace::Percent(10));
  EXPECT_EQ(unknown[2].reserved_space.AsBytes(FsStats{}), 2'000'000'000);
  EXPECT_EQ(unknown[2].max_used_space.AsBytes(FsStats{}), 2'000'000'000);
  EXPECT_EQ(unknown[2].min_free_space.AsBytes(FsStats{}), 2'000'000'000);
}

TEST(DefaultPolicies, WorkerValuesAndGcKeepStorage) {
  GcConfig cfg = Parse("[gc]\nreservedSpace = \"5GB\"\n");
  std::vector<Policy> p = EffectivePolicies(cfg, FsStats{100 * uint64_t{1} << 30, 0});
  ASSERT_EQ(p.size(), 4u);
  for (size_t i = 1; i < 4; ++i) {
    EXPECT_EQ(p[i].reserved_space, DiskSpace::Bytes(5 * kGi));
    EXPECT_TRUE(p[i].max_used_space.unset());
    EXPECT_TRUE(p[i].min_free_space.unset());
  }
  GcConfig legacy = Parse("[worker.oci]\ngckeepstorage = 9000000000\n");
  std::vector<Policy> q = EffectivePolicies(legacy, FsStats{});
  EXPECT_EQ(q[3].reserved_space, DiskSpace::Bytes(9'000'000'000));
  EXPECT_TRUE(q[3].max_used_space.unset());
}

}  // namespace
}  // namespace bcfs::gc
