#include "index/index.h"

#include <sqlite3.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <exception>
#include <map>
#include <new>
#include <utility>

#include "core/log.h"

namespace bcfs::index {

namespace {

struct Migration {
  int version;
  const char* sql;
};

// The schema, as an ordered list of migrations. Migration N takes a database
// from user_version N-1 to N in one transaction. A shipped entry is never
// edited: a schema change is one more entry (and kSchemaVersion + 1).
//
// Integers are SQLite's signed 64 bits; unsigned fields (sizes, dev, ino,
// counts) are stored as their two's-complement bit pattern and read back the
// same way.
constexpr Migration kMigrations[] = {
    {1, R"sql(
CREATE TABLE sources (
  id           INTEGER PRIMARY KEY,
  name         TEXT NOT NULL UNIQUE,
  type         TEXT NOT NULL,
  location     TEXT NOT NULL,
  refreshed_ns INTEGER NOT NULL
);

-- Content-level facts, global by digest. A row lives while a source holds it.
CREATE TABLE blobs (
  digest TEXT PRIMARY KEY,
  size   INTEGER NOT NULL
) WITHOUT ROWID;

-- Which source holds which blob, with the descriptor facts that source gives
-- it (the same bytes may be a docker and an OCI media type in two sources).
CREATE TABLE source_blobs (
  source_id  INTEGER NOT NULL REFERENCES sources(id) ON DELETE CASCADE,
  digest     TEXT NOT NULL REFERENCES blobs(digest),
  media_type TEXT NOT NULL,
  role       TEXT NOT NULL CHECK (role IN ('manifest', 'config', 'layer', 'derived')),
  PRIMARY KEY (source_id, digest)
) WITHOUT ROWID;
CREATE INDEX source_blobs_by_digest ON source_blobs(digest);

CREATE TABLE refs (
  id          INTEGER PRIMARY KEY,
  source_id   INTEGER NOT NULL REFERENCES sources(id) ON DELETE CASCADE,
  name        TEXT NOT NULL,
  history     INTEGER NOT NULL CHECK (history IN (0, 1)),
  manifest    TEXT NOT NULL,
  shape       TEXT NOT NULL,
  created_ns  INTEGER NOT NULL,
  modified_ns INTEGER NOT NULL,
  UNIQUE (source_id, history, name)
);

-- A ref may only use blobs its source holds: the second foreign key says so.
CREATE TABLE ref_blobs (
  ref_id    INTEGER NOT NULL REFERENCES refs(id) ON DELETE CASCADE,
  position  INTEGER NOT NULL,
  source_id INTEGER NOT NULL,
  digest    TEXT NOT NULL,
  PRIMARY KEY (ref_id, position),
  FOREIGN KEY (source_id, digest) REFERENCES source_blobs(source_id, digest) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX ref_blobs_by_source_blob ON ref_blobs(source_id, digest);

-- Keyed by digest alone, without a foreign key: the local store may hold a
-- blob (or derived content) no source names any more, and GC still needs it.
CREATE TABLE accesses (
  digest         TEXT PRIMARY KEY,
  last_access_ns INTEGER NOT NULL,
  use_count      INTEGER NOT NULL
) WITHOUT ROWID;

-- The verification memo (DESIGN §2): one row per local file (dev, ino).
CREATE TABLE verified (
  dev      INTEGER NOT NULL,
  ino      INTEGER NOT NULL,
  size     INTEGER NOT NULL,
  mtime_ns INTEGER NOT NULL,
  ctime_ns INTEGER NOT NULL,
  digest   TEXT NOT NULL,
  PRIMARY KEY (dev, ino)
) WITHOUT ROWID;
)sql"},
    {2, R"sql(
-- Indexed layers (DESIGN §2 "Ingest"), by blob digest, without a foreign key:
-- content-addressed facts stay true while the local store keeps the bytes.
CREATE TABLE layer_indexes (
  digest            TEXT PRIMARY KEY,
  format            INTEGER NOT NULL,
  uncompressed_size INTEGER NOT NULL,
  seek_index        BLOB NOT NULL,
  warnings          TEXT NOT NULL,
  derived_digests   BLOB NOT NULL,
  indexed_ns        INTEGER NOT NULL
) WITHOUT ROWID;

-- A layer's tar entries in tar order (seq). No foreign key: checking one on
-- every insert reads the parent row, whose seek points can be megabytes;
-- SaveLayerIndex and RemoveLayerIndex keep the two tables in step.
CREATE TABLE layer_entries (
  digest      TEXT NOT NULL,
  seq         INTEGER NOT NULL,
  path        TEXT NOT NULL,
  type        TEXT NOT NULL,
  mode        INTEGER NOT NULL,
  uid         INTEGER NOT NULL,
  gid         INTEGER NOT NULL,
  size        INTEGER NOT NULL,
  mtime_sec   INTEGER NOT NULL,
  mtime_nsec  INTEGER NOT NULL,
  link_target TEXT NOT NULL,
  dev_major   INTEGER NOT NULL,
  dev_minor   INTEGER NOT NULL,
  data_offset INTEGER NOT NULL,
  extra       BLOB NOT NULL,
  PRIMARY KEY (digest, seq)
) WITHOUT ROWID;
)sql"},
    {3, R"sql(
-- A digest of what ReplaceSource last stored for a source (everything but
-- refreshed_ns): a mount or refresh that read the same catalog again skips
-- rewriting the source's rows (100,000 blobs take seconds).
CREATE TABLE source_contents (
  source_id INTEGER PRIMARY KEY REFERENCES sources(id) ON DELETE CASCADE,
  digest    TEXT NOT NULL
);
)sql"},
};

constexpr bool MigrationsAreConsecutive() {
  int want = 1;
  for (const Migration& m : kMigrations) {
    if (m.version != want++) return false;
  }
  return want - 1 == Index::kSchemaVersion;
}
static_assert(MigrationsAreConsecutive(),
              "kMigrations must be versions 1..kSchemaVersion in order, one entry each");

constexpr int kBusyTimeoutMs = 5000;

int64_t ToSql(uint64_t v) { return static_cast<int64_t>(v); }
uint64_t FromSql(int64_t v) { return static_cast<uint64_t>(v); }

Code CodeFor(int rc, int sys_errno) {
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return Code::kUnavailable;
    case SQLITE_FULL:
      return Code::kNoSpace;
    case SQLITE_READONLY:
      return Code::kReadOnly;
    case SQLITE_PERM:
    case SQLITE_AUTH:
      return Code::kPermissionDenied;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return Code::kCorrupt;
    case SQLITE_CONSTRAINT:
    case SQLITE_MISMATCH:
    case SQLITE_TOOBIG:
    case SQLITE_RANGE:
      return Code::kInvalidArgument;
    case SQLITE_CANTOPEN:
    case SQLITE_IOERR:
      if (sys_errno == ENOENT || sys_errno == ENOTDIR) return Code::kNotFound;
      if (sys_errno == EACCES || sys_errno == EPERM) return Code::kPermissionDenied;
      if (sys_errno == ENOSPC || sys_errno == EDQUOT) return Code::kNoSpace;
      if (sys_errno == EROFS) return Code::kReadOnly;
      return Code::kIo;
    default:
      return Code::kInternal;
  }
}

// Runs `body`, turning any exception (std::bad_alloc in practice) into a
// kInternal status so none crosses the module boundary.
template <typename F>
auto NoThrow(const std::string& path, std::string_view op, F&& body) -> decltype(body()) {
  try {
    return body();
  } catch (const std::exception& e) {
    return Status(Code::kInternal,
                  "index database " + path + ": " + std::string(op) + ": " + e.what());
  } catch (...) {
    return Status(Code::kInternal,
                  "index database " + path + ": " + std::string(op) + ": unknown exception");
  }
}

}  // namespace

namespace internal {

class Connection;

// A leased cached prepared statement; reset and unbound when it goes out of
// scope, so the next lease starts clean.
class Stmt {
 public:
  Stmt(Connection* conn, sqlite3_stmt* stmt, bool* in_use)
      : conn_(conn), stmt_(stmt), in_use_(in_use) {}
  Stmt(Stmt&& o) noexcept
      : conn_(o.conn_),
        stmt_(std::exchange(o.stmt_, nullptr)),
        in_use_(o.in_use_),
        bind_rc_(o.bind_rc_) {}
  Stmt& operator=(Stmt&&) = delete;
  ~Stmt() {
    if (stmt_ == nullptr) return;
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
    *in_use_ = false;
  }

  Stmt& Bind(int i, int64_t v) {
    Note(sqlite3_bind_int64(stmt_, i, v));
    return *this;
  }
  Stmt& BindBlob(int i, std::string_view v) {
    Note(sqlite3_bind_blob64(stmt_, i, v.data() ? v.data() : "", v.size(), SQLITE_TRANSIENT));
    return *this;
  }
  // Without a copy (a layer's seek points can be ~100 MB): `v` must stay
  // unchanged until the statement is reset or finalized.
  Stmt& BindBlobNoCopy(int i, std::string_view v) {
    Note(sqlite3_bind_blob64(stmt_, i, v.data() ? v.data() : "", v.size(), SQLITE_STATIC));
    return *this;
  }
  Stmt& Bind(int i, std::string_view v) {
    // A null data pointer would bind SQL NULL, not "".
    Note(sqlite3_bind_text64(stmt_, i, v.data() ? v.data() : "", v.size(), SQLITE_TRANSIENT,
                             SQLITE_UTF8));
    return *this;
  }

  // Makes the statement ready to be bound and run again.
  void Reset() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
    bind_rc_ = SQLITE_OK;
  }

  // True when a row is ready, false when done.
  Result<bool> Step(std::string_view what);
  // Steps to completion, ignoring rows.
  Status Run(std::string_view what);

  int64_t Int(int col) { return sqlite3_column_int64(stmt_, col); }
  std::string Blob(int col) {
    const void* p = sqlite3_column_blob(stmt_, col);
    if (p == nullptr) return std::string();
    return std::string(static_cast<const char*>(p),
                       static_cast<size_t>(sqlite3_column_bytes(stmt_, col)));
  }
  std::string Text(int col) {
    const unsigned char* p = sqlite3_column_text(stmt_, col);
    if (p == nullptr) return std::string();
    return std::string(reinterpret_cast<const char*>(p),
                       static_cast<size_t>(sqlite3_column_bytes(stmt_, col)));
  }

 private:
  void Note(int rc) {
    if (rc != SQLITE_OK && bind_rc_ == SQLITE_OK) bind_rc_ = rc;
  }

  Connection* conn_;
  sqlite3_stmt* stmt_;
  bool* in_use_;
  int bind_rc_ = SQLITE_OK;
};

class Connection {
 public:
  explicit Connection(std::string path) : path_(std::move(path)) {}
  ~Connection() {
    for (auto& [sql, cached] : stmts_) sqlite3_finalize(cached.stmt);
    // close_v2 also copes with a handle whose open failed.
    if (db_ != nullptr) sqlite3_close_v2(db_);
  }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  const std::string& path() const { return path_; }
  sqlite3* db() const { return db_; }
  sqlite3** mutable_db() { return &db_; }

  // "<what>: <SQLite message>[: <strerror>] (SQLite error <extended code>)",
  // coded from the SQLite result and the OS error behind it.
  Status Error(int rc, std::string_view what) const {
    int ext = rc;
    std::string msg(what);
    msg += ": ";
    int sys = 0;
    if (db_ != nullptr && (sqlite3_extended_errcode(db_) & 0xff) == (rc & 0xff)) {
      ext = sqlite3_extended_errcode(db_);
      msg += sqlite3_errmsg(db_);
      int primary = rc & 0xff;
      if (primary == SQLITE_CANTOPEN || primary == SQLITE_IOERR) sys = sqlite3_system_errno(db_);
    } else {
      msg += sqlite3_errstr(rc);
    }
    if (sys != 0) {
      msg += ": ";
      msg += std::strerror(sys);
    }
    msg += " (SQLite error " + std::to_string(ext) + ")";
    return Status(CodeFor(ext, sys), std::move(msg), ext);
  }

  // Prefixes "index database <path>: <op>".
  Status Context(const Status& s, std::string_view op) const {
    return s.WithContext("index database " + path_ + ": " + std::string(op));
  }

  // For SQL without values: BEGIN/COMMIT, PRAGMAs, migrations.
  Status Exec(const char* sql, std::string_view what) {
    int rc = sqlite3_exec(db_, sql, nullptr, nullptr, nullptr);
    if (rc != SQLITE_OK) return Error(rc, what);
    return OkStatus();
  }

  // Leases the cached statement for `sql` (compiled on first use). `sql` must
  // be a constant: values go in with Bind, never into the text.
  Result<Stmt> Prepare(const char* sql) {
    auto [it, inserted] = stmts_.try_emplace(sql);
    Cached& cached = it->second;
    if (cached.stmt == nullptr) {
      int rc = sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &cached.stmt, nullptr);
      if (rc != SQLITE_OK) {
        sqlite3_finalize(cached.stmt);
        cached.stmt = nullptr;
        return Error(rc, "prepare statement");
      }
    }
    // A statement leased twice at once would be reset under its first user.
    BCFS_CHECK(!cached.in_use);
    cached.in_use = true;
    return Stmt(this, cached.stmt, &cached.in_use);
  }

 private:
  struct Cached {
    sqlite3_stmt* stmt = nullptr;
    bool in_use = false;
  };

  std::string path_;
  sqlite3* db_ = nullptr;
  // Keyed by the text's address: callers pass string literals.
  std::unordered_map<const char*, Cached> stmts_;
};

Result<bool> Stmt::Step(std::string_view what) {
  if (bind_rc_ != SQLITE_OK) return conn_->Error(bind_rc_, what);
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return conn_->Error(rc, what);
}

Status Stmt::Run(std::string_view what) {
  while (true) {
    BCFS_ASSIGN_OR_RETURN(bool row, Step(what));
    if (!row) return OkStatus();
  }
}

}  // namespace internal

namespace {

using internal::Connection;
using internal::Stmt;

// A transaction rolled back unless committed, also when an early return or an
// exception leaves the scope.
class Transaction {
 public:
  explicit Transaction(Connection* conn) : conn_(conn) {}
  ~Transaction() {
    // SQLite may already have rolled back on its own (e.g. SQLITE_FULL).
    if (active_ && sqlite3_get_autocommit(conn_->db()) == 0) {
      sqlite3_exec(conn_->db(), "ROLLBACK", nullptr, nullptr, nullptr);
    }
  }
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;

  // IMMEDIATE takes the write lock up front, so a writer waits in the busy
  // handler instead of failing when it later upgrades a read lock.
  Status BeginWrite() { return Begin("BEGIN IMMEDIATE"); }
  // A read transaction: several queries see one snapshot.
  Status BeginRead() { return Begin("BEGIN"); }

  Status Commit() {
    BCFS_RETURN_IF_ERROR(conn_->Exec("COMMIT", "commit"));
    active_ = false;
    return OkStatus();
  }

 private:
  Status Begin(const char* sql) {
    BCFS_RETURN_IF_ERROR(conn_->Exec(sql, "begin transaction"));
    active_ = true;
    return OkStatus();
  }

  Connection* conn_;
  bool active_ = false;
};

Result<int> ReadUserVersion(Connection& conn) {
  BCFS_ASSIGN_OR_RETURN(Stmt stmt, conn.Prepare("PRAGMA user_version"));
  BCFS_ASSIGN_OR_RETURN(bool row, stmt.Step("read schema version"));
  if (!row) return InternalError("read schema version: PRAGMA user_version returned no row");
  return static_cast<int>(stmt.Int(0));
}

Status NewerSchemaError(const std::string& path, int version) {
  return UnsupportedError("index database " + path + " has schema version " +
                          std::to_string(version) + ", newer than version " +
                          std::to_string(Index::kSchemaVersion) +
                          " that this buildcachefs knows: use a newer buildcachefs, or move the "
                          "file away to start a new index");
}

Status Migrate(Connection& conn) {
  for (const Migration& m : kMigrations) {
    std::string what = "migrate to schema version " + std::to_string(m.version);
    Transaction tx(&conn);
    BCFS_RETURN_IF_ERROR(tx.BeginWrite().WithContext(what));
    // Read again under the write lock: another process may have migrated.
    BCFS_ASSIGN_OR_RETURN(int current, ReadUserVersion(conn));
    if (current > Index::kSchemaVersion) return NewerSchemaError(conn.path(), current);
    if (current >= m.version) continue;
    if (current != m.version - 1) {
      return InternalError(what + ": database is at version " + std::to_string(current));
    }
    BCFS_RETURN_IF_ERROR(conn.Exec(m.sql, what));
    // PRAGMA takes no bound parameters; the number is our own constant.
    std::string bump = "PRAGMA user_version = " + std::to_string(m.version);
    BCFS_RETURN_IF_ERROR(conn.Exec(bump.c_str(), what));
    BCFS_RETURN_IF_ERROR(tx.Commit().WithContext(what));
    LOG_DEBUG("index database " << conn.path() << ": migrated to schema version " << m.version);
  }
  return OkStatus();
}

Status CheckDigest(const Digest& d, std::string_view what) {
  if (d.empty()) return InvalidArgumentError(std::string(what) + " has an empty digest");
  return OkStatus();
}

Result<Digest> ParseStoredDigest(const std::string& text, std::string_view where) {
  if (text.empty()) return Digest();
  auto d = Digest::Parse(text);
  if (!d.ok()) return d.status().WithContext(where);
  return d;
}

// Deletes blobs that no source holds any more.
Status DeleteUnheldBlobs(Connection& conn) {
  BCFS_ASSIGN_OR_RETURN(
      Stmt stmt, conn.Prepare("DELETE FROM blobs WHERE NOT EXISTS "
                              "(SELECT 1 FROM source_blobs sb WHERE sb.digest = blobs.digest)"));
  return stmt.Run("delete blobs no source holds");
}

// Hashes a snapshot's stored facts (all but `refreshed`), each field
// length-prefixed so that no two snapshots share an encoding.
class SnapshotHasher {
 public:
  std::string Of(const SourceSnapshot& snap) {
    Text(snap.source.name);
    Text(snap.source.type);
    Text(snap.source.location);
    Number(snap.blobs.size());
    for (const BlobRow& b : snap.blobs) {
      Text(b.digest.ToString());
      Number(b.size);
      Text(b.media_type);
      Text(RoleName(b.role));
    }
    Number(snap.refs.size());
    for (const RefRow& r : snap.refs) {
      Text(r.name);
      Text(r.manifest.ToString());
      Text(r.shape);
      Number(static_cast<uint64_t>(r.created));
      Number(static_cast<uint64_t>(r.modified));
      Number(r.history ? 1 : 0);
      Number(r.blobs.size());
      for (const Digest& d : r.blobs) Text(d.ToString());
    }
    return hash_.Finish().ToString();
  }

 private:
  void Number(uint64_t v) { hash_.Update(&v, sizeof v); }
  void Text(std::string_view t) {
    Number(t.size());
    hash_.Update(t);
  }
  Sha256 hash_;
};

// What identifies rows stored under a caller's key (see ReplaceSource):
// never equal to a content digest, which hashes the blob count after the
// source fields.
std::string KeyedContent(const SourceRow& source, std::string_view key) {
  Sha256 h;
  for (std::string_view t :
       {std::string_view("key"), std::string_view(source.name), std::string_view(source.type),
        std::string_view(source.location), key}) {
    const uint64_t n = t.size();
    h.Update(&n, sizeof n);
    h.Update(t);
  }
  return h.Finish().ToString();
}

Status ReplaceSourceLocked(Connection& conn, const SourceSnapshot& snap, std::string_view key) {
  if (snap.source.name.empty()) return InvalidArgumentError("source name is empty");
  for (const BlobRow& b : snap.blobs) BCFS_RETURN_IF_ERROR(CheckDigest(b.digest, "a blob"));
  const std::string content =
      key.empty() ? SnapshotHasher().Of(snap) : KeyedContent(snap.source, key);

  Transaction tx(&conn);
  BCFS_RETURN_IF_ERROR(tx.BeginWrite());

  {
    // What is stored already says the same (it was valid then): only the
    // refresh time changes.
    BCFS_ASSIGN_OR_RETURN(
        Stmt stmt, conn.Prepare("UPDATE sources SET refreshed_ns = ?3 WHERE name = ?1 AND "
                                "id IN (SELECT source_id FROM source_contents WHERE digest = ?2)"));
    BCFS_RETURN_IF_ERROR(stmt.Bind(1, snap.source.name)
                             .Bind(2, content)
                             .Bind(3, snap.refreshed)
                             .Run("update the source's refresh time"));
    if (sqlite3_changes(conn.db()) > 0) return tx.Commit();
  }

  int64_t source_id = 0;
  {
    BCFS_ASSIGN_OR_RETURN(
        Stmt stmt,
        conn.Prepare(
            "INSERT INTO sources(name, type, location, refreshed_ns) VALUES(?1, ?2, ?3, ?4) "
            "ON CONFLICT(name) DO UPDATE SET type = excluded.type, "
            "location = excluded.location, refreshed_ns = excluded.refreshed_ns "
            "RETURNING id"));
    stmt.Bind(1, snap.source.name)
        .Bind(2, snap.source.type)
        .Bind(3, snap.source.location)
        .Bind(4, snap.refreshed);
    BCFS_ASSIGN_OR_RETURN(bool row, stmt.Step("upsert source row"));
    if (!row) return InternalError("upsert source row: no id returned");
    source_id = stmt.Int(0);
    BCFS_RETURN_IF_ERROR(stmt.Run("upsert source row"));
  }
  {
    // Refs go first (their links cascade), then the blob list they point into.
    BCFS_ASSIGN_OR_RETURN(Stmt stmt, conn.Prepare("DELETE FROM refs WHERE source_id = ?1"));
    BCFS_RETURN_IF_ERROR(stmt.Bind(1, source_id).Run("delete old refs"));
  }
  {
    BCFS_ASSIGN_OR_RETURN(Stmt stmt, conn.Prepare("DELETE FROM source_blobs WHERE source_id = ?1"));
    BCFS_RETURN_IF_ERROR(stmt.Bind(1, source_id).Run("delete old blob list"));
  }
  for (const BlobRow& b : snap.blobs) {
    std::string digest = b.digest.ToString();
    {
      BCFS_ASSIGN_OR_RETURN(Stmt stmt,
                            conn.Prepare("INSERT INTO blobs(digest, size) VALUES(?1, ?2) "
                                         "ON CONFLICT(digest) DO UPDATE SET size = excluded.size"));
      BCFS_RETURN_IF_ERROR(
          stmt.Bind(1, digest).Bind(2, ToSql(b.size)).Run("upsert blob " + digest));
    }
    {
      BCFS_ASSIGN_OR_RETURN(
          Stmt stmt,
          conn.Prepare("INSERT INTO source_blobs(source_id, digest, media_type, role) "
                       "VALUES(?1, ?2, ?3, ?4) ON CONFLICT(source_id, digest) DO UPDATE SET "
                       "media_type = excluded.media_type, role = excluded.role"));
      BCFS_RETURN_IF_ERROR(stmt.Bind(1, source_id)
                               .Bind(2, digest)
                               .Bind(3, b.media_type)
                               .Bind(4, RoleName(b.role))
                               .Run("record that the source holds blob " + digest));
    }
  }
  for (const RefRow& r : snap.refs) {
    std::string what =
        "insert " + std::string(r.history ? "history entry" : "ref") + " \"" + r.name + "\"";
    int64_t ref_id = 0;
    {
      BCFS_ASSIGN_OR_RETURN(
          Stmt stmt, conn.Prepare("INSERT INTO refs(source_id, name, history, manifest, shape, "
                                  "created_ns, modified_ns) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)"));
      stmt.Bind(1, source_id)
          .Bind(2, r.name)
          .Bind(3, int64_t{r.history ? 1 : 0})
          .Bind(4, r.manifest.ToString())
          .Bind(5, r.shape)
          .Bind(6, r.created)
          .Bind(7, r.modified);
      Status st = stmt.Run(what);
      if (st.foreign() == SQLITE_CONSTRAINT_UNIQUE) {
        return Status(Code::kInvalidArgument, what + ": the name is used twice", st.foreign());
      }
      BCFS_RETURN_IF_ERROR(st);
      ref_id = sqlite3_last_insert_rowid(conn.db());
    }
    for (size_t pos = 0; pos < r.blobs.size(); ++pos) {
      std::string digest = r.blobs[pos].ToString();
      BCFS_ASSIGN_OR_RETURN(Stmt stmt,
                            conn.Prepare("INSERT INTO ref_blobs(ref_id, position, source_id, "
                                         "digest) VALUES(?1, ?2, ?3, ?4)"));
      Status st = stmt.Bind(1, ref_id)
                      .Bind(2, static_cast<int64_t>(pos))
                      .Bind(3, source_id)
                      .Bind(4, digest)
                      .Run(what);
      if (st.foreign() == SQLITE_CONSTRAINT_FOREIGNKEY) {
        return Status(Code::kInvalidArgument,
                      what + ": blob " + std::to_string(pos) + " (" +
                          (digest.empty() ? std::string("empty digest") : digest) +
                          ") is not in the source's blob list",
                      st.foreign());
      }
      BCFS_RETURN_IF_ERROR(st);
    }
  }
  {
    BCFS_ASSIGN_OR_RETURN(
        Stmt stmt, conn.Prepare("INSERT INTO source_contents(source_id, digest) VALUES(?1, ?2) "
                                "ON CONFLICT(source_id) DO UPDATE SET digest = excluded.digest"));
    BCFS_RETURN_IF_ERROR(
        stmt.Bind(1, source_id).Bind(2, content).Run("record the source's content digest"));
  }
  BCFS_RETURN_IF_ERROR(DeleteUnheldBlobs(conn));
  return tx.Commit();
}

}  // namespace

std::string_view RoleName(Role role) {
  switch (role) {
    case Role::kManifest:
      return "manifest";
    case Role::kConfig:
      return "config";
    case Role::kLayer:
      return "layer";
    case Role::kDerived:
      return "derived";
  }
  return "unknown";
}

Result<Role> ParseRole(std::string_view text) {
  for (Role r : {Role::kManifest, Role::kConfig, Role::kLayer, Role::kDerived}) {
    if (RoleName(r) == text) return r;
  }
  return InvalidArgumentError("unknown blob role \"" + std::string(text) +
                              "\" (want manifest, config, layer or derived)");
}

Index::Index(std::unique_ptr<internal::Connection> db) : db_(std::move(db)) {}
Index::~Index() = default;

const std::string& Index::path() const { return db_->path(); }

Result<std::unique_ptr<Index>> Index::Open(const std::string& path) {
  return NoThrow(path, "open", [&]() -> Result<std::unique_ptr<Index>> {
    auto conn = std::make_unique<Connection>(path);
    auto fail = [&](const Status& s) { return conn->Context(s, "open"); };
    // NOMUTEX: an Index is used by one thread at a time (see index.h).
    int rc =
        sqlite3_open_v2(path.c_str(), conn->mutable_db(),
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
    if (rc != SQLITE_OK) return fail(conn->Error(rc, "open the file"));
    sqlite3_extended_result_codes(conn->db(), 1);
    sqlite3_busy_timeout(conn->db(), kBusyTimeoutMs);

    // Refuse a newer database before touching it (journal mode included).
    auto version = ReadUserVersion(*conn);
    if (!version.ok()) return fail(version.status());
    if (*version > kSchemaVersion) return NewerSchemaError(path, *version);

    {
      auto stmt = conn->Prepare("PRAGMA journal_mode = WAL");
      if (!stmt.ok()) return fail(stmt.status());
      auto row = stmt->Step("set WAL mode");
      if (!row.ok()) return fail(row.status());
      std::string mode = *row ? stmt->Text(0) : std::string();
      // In-memory databases report "memory"; a file system without shared
      // memory support may refuse WAL, which costs only concurrency.
      if (mode != "wal" && path != ":memory:" && !path.empty()) {
        LOG_WARNING("index database " << path << ": journal mode is \"" << mode
                                      << "\", not WAL; readers will wait for writers");
      }
    }
    // Index content can be rebuilt from the sources: NORMAL keeps the file
    // consistent in WAL mode and may lose only the last commits on power loss.
    for (const char* pragma : {"PRAGMA foreign_keys = ON", "PRAGMA synchronous = NORMAL"}) {
      Status st = conn->Exec(pragma, pragma);
      if (!st.ok()) return fail(st);
    }
    Status st = Migrate(*conn);
    if (st.code() == Code::kUnsupported) return st;
    if (!st.ok()) return fail(st);
    return std::unique_ptr<Index>(new Index(std::move(conn)));
  });
}

Result<int> Index::SchemaVersion() {
  return NoThrow(path(), "read schema version", [&]() -> Result<int> {
    auto v = ReadUserVersion(*db_);
    if (!v.ok()) return db_->Context(v.status(), "read schema version");
    return v;
  });
}

Status Index::ReplaceSource(const SourceSnapshot& snapshot, std::string_view key) {
  std::string op = "replace source \"" + snapshot.source.name + "\"";
  return NoThrow(path(), op, [&]() -> Status {
    return db_->Context(ReplaceSourceLocked(*db_, snapshot, key), op);
  });
}

Result<bool> Index::TouchSource(const SourceRow& source, std::string_view key, TimeNs refreshed) {
  std::string op = "touch source \"" + source.name + "\"";
  return NoThrow(path(), op, [&]() -> Result<bool> {
    auto body = [&]() -> Result<bool> {
      BCFS_ASSIGN_OR_RETURN(
          Stmt stmt,
          db_->Prepare("UPDATE sources SET refreshed_ns = ?3 WHERE name = ?1 AND "
                       "id IN (SELECT source_id FROM source_contents WHERE digest = ?2)"));
      BCFS_RETURN_IF_ERROR(stmt.Bind(1, source.name)
                               .Bind(2, KeyedContent(source, key))
                               .Bind(3, refreshed)
                               .Run("update the source's refresh time"));
      return sqlite3_changes(db_->db()) > 0;
    };
    auto r = body();
    if (!r.ok()) return db_->Context(r.status(), op);
    return r;
  });
}

Result<std::vector<std::string>> Index::ListSources() {
  return NoThrow(path(), "list sources", [&]() -> Result<std::vector<std::string>> {
    auto body = [&]() -> Result<std::vector<std::string>> {
      BCFS_ASSIGN_OR_RETURN(Stmt stmt, db_->Prepare("SELECT name FROM sources ORDER BY name"));
      std::vector<std::string> names;
      while (true) {
        BCFS_ASSIGN_OR_RETURN(bool row, stmt.Step("query"));
        if (!row) break;
        names.push_back(stmt.Text(0));
      }
      return names;
    };
    auto r = body();
    if (!r.ok()) return db_->Context(r.status(), "list sources");
    return r;
  });
}

Result<SourceSnapshot> Index::LoadSource(const std::string& name) {
  std::string op = "load source \"" + name + "\"";
  return NoThrow(path(), op, [&]() -> Result<SourceSnapshot> {
    auto body = [&]() -> Result<SourceSnapshot> {
      Transaction tx(db_.get());
      BCFS_RETURN_IF_ERROR(tx.BeginRead());
      SourceSnapshot snap;
      int64_t source_id = 0;
      {
        BCFS_ASSIGN_OR_RETURN(Stmt stmt, db_->Prepare("SELECT id, name, type, location, "
                                                      "refreshed_ns FROM sources WHERE name = ?1"));
        BCFS_ASSIGN_OR_RETURN(bool row, stmt.Bind(1, name).Step("query source row"));
        if (!row) return NotFoundError("no such source");
        source_id = stmt.Int(0);
        snap.source.name = stmt.Text(1);
        snap.source.type = stmt.Text(2);
        snap.source.location = stmt.Text(3);
        snap.refreshed = stmt.Int(4);
      }
      {
        BCFS_ASSIGN_OR_RETURN(
            Stmt stmt, db_->Prepare("SELECT sb.digest, b.size, sb.media_type, sb.role "
                                    "FROM source_blobs sb JOIN blobs b ON b.digest = sb.digest "
                                    "WHERE sb.source_id = ?1 ORDER BY sb.digest"));
        stmt.Bind(1, source_id);
        while (true) {
          BCFS_ASSIGN_OR_RETURN(bool row, stmt.Step("query blobs"));
          if (!row) break;
          BlobRow b;
          std::string digest = stmt.Text(0);
          BCFS_ASSIGN_OR_RETURN(b.digest, ParseStoredDigest(digest, "blob row"));
          b.size = FromSql(stmt.Int(1));
          b.media_type = stmt.Text(2);
          auto role = ParseRole(stmt.Text(3));
          if (!role.ok()) {
            return Status(Code::kCorrupt, role.status().WithContext("blob " + digest).message());
          }
          b.role = *role;
          snap.blobs.push_back(std::move(b));
        }
      }
      std::unordered_map<int64_t, size_t> ref_at;  // refs.id -> position in snap.refs
      {
        BCFS_ASSIGN_OR_RETURN(Stmt stmt,
                              db_->Prepare("SELECT id, name, history, manifest, shape, created_ns, "
                                           "modified_ns FROM refs WHERE source_id = ?1 "
                                           "ORDER BY history, name"));
        stmt.Bind(1, source_id);
        while (true) {
          BCFS_ASSIGN_OR_RETURN(bool row, stmt.Step("query refs"));
          if (!row) break;
          RefRow r;
          r.name = stmt.Text(1);
          r.history = stmt.Int(2) != 0;
          BCFS_ASSIGN_OR_RETURN(
              r.manifest, ParseStoredDigest(stmt.Text(3), "manifest of ref \"" + r.name + "\""));
          r.shape = stmt.Text(4);
          r.created = stmt.Int(5);
          r.modified = stmt.Int(6);
          ref_at.emplace(stmt.Int(0), snap.refs.size());
          snap.refs.push_back(std::move(r));
        }
      }
      {
        BCFS_ASSIGN_OR_RETURN(Stmt stmt,
                              db_->Prepare("SELECT rb.ref_id, rb.digest FROM ref_blobs rb "
                                           "JOIN refs r ON r.id = rb.ref_id WHERE r.source_id = ?1 "
                                           "ORDER BY rb.ref_id, rb.position"));
        stmt.Bind(1, source_id);
        while (true) {
          BCFS_ASSIGN_OR_RETURN(bool row, stmt.Step("query ref blobs"));
          if (!row) break;
          auto it = ref_at.find(stmt.Int(0));
          if (it == ref_at.end()) continue;  // cannot happen inside one read transaction
          RefRow& r = snap.refs[it->second];
          BCFS_ASSIGN_OR_RETURN(Digest d,
                                ParseStoredDigest(stmt.Text(1), "blob of ref \"" + r.name + "\""));
          r.blobs.push_back(std::move(d));
        }
      }
      BCFS_RETURN_IF_ERROR(tx.Commit());
      return snap;
    };
    auto r = body();
    if (!r.ok()) return db_->Context(r.status(), op);
    return r;
  });
}

Status Index::RemoveSource(const std::string& name) {
  std::string op = "remove source \"" + name + "\"";
  return NoThrow(path(), op, [&]() -> Status {
    auto body = [&]() -> Status {
      Transaction tx(db_.get());
      BCFS_RETURN_IF_ERROR(tx.BeginWrite());
      {
        BCFS_ASSIGN_OR_RETURN(Stmt stmt, db_->Prepare("DELETE FROM sources WHERE name = ?1"));
        BCFS_RETURN_IF_ERROR(stmt.Bind(1, name).Run("delete source row"));
      }
      if (sqlite3_changes(db_->db()) == 0) return NotFoundError("no such source");
      BCFS_RETURN_IF_ERROR(DeleteUnheldBlobs(*db_));
      return tx.Commit();
    };
    return db_->Context(body(), op);
  });
}

Result<bool> Index::HasBlob(const Digest& digest) {
  std::string op = "look up blob " + digest.ToString();
  return NoThrow(path(), op, [&]() -> Result<bool> {
    auto body = [&]() -> Result<bool> {
      BCFS_ASSIGN_OR_RETURN(Stmt stmt, db_->Prepare("SELECT 1 FROM blobs WHERE digest = ?1"));
      return stmt.Bind(1, digest.ToString()).Step("query");
    };
    auto r = body();
    if (!r.ok()) return db_->Context(r.status(), op);
    return r;
  });
}

Result<std::vector<std::string>> Index::SourcesHolding(const Digest& digest) {
  std::string op = "list sources holding blob " + digest.ToString();
  return NoThrow(path(), op, [&]() -> Result<std::vector<std::string>> {
    auto body = [&]() -> Result<std::vector<std::string>> {
      BCFS_ASSIGN_OR_RETURN(
          Stmt stmt, db_->Prepare("SELECT s.name FROM source_blobs sb JOIN sources s "
                                  "ON s.id = sb.source_id WHERE sb.digest = ?1 ORDER BY s.name"));
      stmt.Bind(1, digest.ToString());
      std::vector<std::string> names;
      while (true) {
        BCFS_ASSIGN_OR_RETURN(bool row, stmt.Step("query"));
        if (!row) break;
        names.push_back(stmt.Text(0));
      }
      return names;
    };
    auto r = body();
    if (!r.ok()) return db_->Context(r.status(), op);
    return r;
  });
}

Status Index::RecordAccesses(const std::vector<Access>& accesses) {
  std::string op = "record " + std::to_string(accesses.size()) + " accesses";
  return NoThrow(path(), op, [&]() -> Status {
    auto body = [&]() -> Status {
      if (accesses.empty()) return OkStatus();
      for (const Access& a : accesses) BCFS_RETURN_IF_ERROR(CheckDigest(a.digest, "an access"));
      Transaction tx(db_.get());
      BCFS_RETURN_IF_ERROR(tx.BeginWrite());
      for (const Access& a : accesses) {
        BCFS_ASSIGN_OR_RETURN(
            Stmt stmt,
            db_->Prepare("INSERT INTO accesses(digest, last_access_ns, use_count) "
                         "VALUES(?1, ?2, ?3) ON CONFLICT(digest) DO UPDATE SET "
                         "last_access_ns = max(last_access_ns, excluded.last_access_ns), "
                         "use_count = use_count + excluded.use_count"));
        std::string digest = a.digest.ToString();
        BCFS_RETURN_IF_ERROR(stmt.Bind(1, digest)
                                 .Bind(2, a.when)
                                 .Bind(3, ToSql(a.count))
                                 .Run("upsert access of " + digest));
      }
      return tx.Commit();
    };
    return db_->Context(body(), op);
  });
}

Result<std::optional<AccessRow>> Index::GetAccess(const Digest& digest) {
  std::string op = "read access of " + digest.ToString();
  return NoThrow(path(), op, [&]() -> Result<std::optional<AccessRow>> {
    auto body = [&]() -> Result<std::optional<AccessRow>> {
      BCFS_ASSIGN_OR_RETURN(Stmt stmt, db_->Prepare("SELECT last_access_ns, use_count "
                                                    "FROM accesses WHERE digest = ?1"));
      BCFS_ASSIGN_OR_RETURN(bool row, stmt.Bind(1, digest.ToString()).Step("query"));
      if (!row) return std::optional<AccessRow>();
      return std::optional<AccessRow>(AccessRow{stmt.Int(0), FromSql(stmt.Int(1))});
    };
    auto r = body();
    if (!r.ok()) return db_->Context(r.status(), op);
    return r;
  });
}

// Parameters ?1..?6 of the verified table: (dev, ino, size, mtime_ns, ctime_ns, digest).
static Stmt& BindIdentity(Stmt& stmt, const FileIdentity& file, const Digest& digest) {
  return stmt.Bind(1, ToSql(file.dev))
      .Bind(2, ToSql(file.ino))
      .Bind(3, ToSql(file.size))
      .Bind(4, file.mtime_ns)
      .Bind(5, file.ctime_ns)
      .Bind(6, digest.ToString());
}

Status Index::RememberVerified(const FileIdentity& file, const Digest& digest) {
  std::string op = "remember verified file (dev " + std::to_string(file.dev) + ", ino " +
                   std::to_string(file.ino) + ") as " + digest.ToString();
  return NoThrow(path(), op, [&]() -> Status {
    auto body = [&]() -> Status {
      BCFS_RETURN_IF_ERROR(CheckDigest(digest, "the verified file"));
      BCFS_ASSIGN_OR_RETURN(
          Stmt stmt, db_->Prepare("INSERT OR REPLACE INTO verified(dev, ino, size, mtime_ns, "
                                  "ctime_ns, digest) VALUES(?1, ?2, ?3, ?4, ?5, ?6)"));
      return BindIdentity(stmt, file, digest).Run("upsert");
    };
    return db_->Context(body(), op);
  });
}

Result<bool> Index::IsVerified(const FileIdentity& file, const Digest& digest) {
  std::string op = "look up verified file (dev " + std::to_string(file.dev) + ", ino " +
                   std::to_string(file.ino) + ")";
  return NoThrow(path(), op, [&]() -> Result<bool> {
    auto body = [&]() -> Result<bool> {
      if (digest.empty()) return false;
      BCFS_ASSIGN_OR_RETURN(
          Stmt stmt, db_->Prepare("SELECT 1 FROM verified WHERE dev = ?1 AND ino = ?2 AND "
                                  "size = ?3 AND mtime_ns = ?4 AND ctime_ns = ?5 AND digest = ?6"));
      return BindIdentity(stmt, file, digest).Step("query");
    };
    auto r = body();
    if (!r.ok()) return db_->Context(r.status(), op);
    return r;
  });
}

Result<std::vector<std::string>> Index::IntegrityCheck() {
  const std::string op = "integrity check";
  return NoThrow(path(), op, [&]() -> Result<std::vector<std::string>> {
    auto body = [&]() -> Result<std::vector<std::string>> {
      BCFS_ASSIGN_OR_RETURN(Stmt stmt, db_->Prepare("PRAGMA integrity_check"));
      std::vector<std::string> out;
      while (true) {
        BCFS_ASSIGN_OR_RETURN(bool row, stmt.Step("check"));
        if (!row) break;
        std::string line = stmt.Text(0);
        if (line != "ok") out.push_back(std::move(line));
      }
      return out;
    };
    auto r = body();
    if (!r.ok()) return db_->Context(r.status(), op);
    return r;
  });
}

// Blob uses

Result<std::vector<BlobUse>> Index::ListBlobUses() {
  const std::string op = "list blob uses";
  return NoThrow(path(), op, [&]() -> Result<std::vector<BlobUse>> {
    auto body = [&]() -> Result<std::vector<BlobUse>> {
      std::map<std::string, BlobUse> uses;
      auto use = [&](const std::string& text) -> Result<BlobUse*> {
        auto [it, inserted] = uses.try_emplace(text);
        if (inserted) {
          BCFS_ASSIGN_OR_RETURN(it->second.digest, ParseStoredDigest(text, "stored digest"));
        }
        return &it->second;
      };
      Transaction tx(db_.get());
      BCFS_RETURN_IF_ERROR(tx.BeginRead());
      {
        BCFS_ASSIGN_OR_RETURN(Stmt stmt,
                              db_->Prepare("SELECT sb.digest, s.name, sb.media_type, sb.role FROM "
                                           "source_blobs sb JOIN sources s ON s.id = sb.source_id "
                                           "ORDER BY sb.digest, s.name"));
        while (true) {
          BCFS_ASSIGN_OR_RETURN(bool row, stmt.Step("query source blobs"));
          if (!row) break;
          BCFS_ASSIGN_OR_RETURN(BlobUse * u, use(stmt.Text(0)));
          u->sources.push_back(stmt.Text(1));
          if (!u->role) {
            u->media_type = stmt.Text(2);
            BCFS_ASSIGN_OR_RETURN(Role role, ParseRole(stmt.Text(3)));
            u->role = role;
          }
        }
      }
      {
        BCFS_ASSIGN_OR_RETURN(
            Stmt stmt, db_->Prepare("SELECT DISTINCT rb.digest, r.name FROM ref_blobs rb JOIN "
                                    "refs r ON r.id = rb.ref_id ORDER BY rb.digest, r.name"));
        while (true) {
          BCFS_ASSIGN_OR_RETURN(bool row, stmt.Step("query ref blobs"));
          if (!row) break;
          BCFS_ASSIGN_OR_RETURN(BlobUse * u, use(stmt.Text(0)));
          u->refs.push_back(stmt.Text(1));
        }
      }
      {
        BCFS_ASSIGN_OR_RETURN(
            Stmt stmt, db_->Prepare("SELECT digest, last_access_ns, use_count FROM accesses"));
        while (true) {
          BCFS_ASSIGN_OR_RETURN(bool row, stmt.Step("query accesses"));
          if (!row) break;
          BCFS_ASSIGN_OR_RETURN(BlobUse * u, use(stmt.Text(0)));
          u->last_access = stmt.Int(1);
          u->use_count = FromSql(stmt.Int(2));
        }
      }
      BCFS_RETURN_IF_ERROR(tx.Commit());
      std::vector<BlobUse> out;
      out.reserve(uses.size());
      for (auto& [k, u] : uses) {
        std::sort(u.sources.begin(), u.sources.end());
        u.sources.erase(std::unique(u.sources.begin(), u.sources.end()), u.sources.end());
        std::sort(u.refs.begin(), u.refs.end());
        u.refs.erase(std::unique(u.refs.begin(), u.refs.end()), u.refs.end());
        out.push_back(std::move(u));
      }
      return out;
    };
    auto r = body();
    if (!r.ok()) return db_->Context(r.status(), op);
    return r;
  });
}

// Layer indexes

// Deletes a layer's row and its entries (inside the caller's transaction).
static Status DeleteLayerRows(Connection& conn, const std::string& digest) {
  {
    BCFS_ASSIGN_OR_RETURN(Stmt del, conn.Prepare("DELETE FROM layer_entries WHERE digest = ?1"));
    BCFS_RETURN_IF_ERROR(del.Bind(1, digest).Run("delete the old entries"));
  }
  BCFS_ASSIGN_OR_RETURN(Stmt del, conn.Prepare("DELETE FROM layer_indexes WHERE digest = ?1"));
  return del.Bind(1, digest).Run("delete the old row");
}

Status Index::SaveLayerIndex(const LayerIndexRow& row) {
  size_t i = 0;
  return SaveLayerIndex(row, [&]() -> const LayerEntryRow* {
    return i < row.entries.size() ? &row.entries[i++] : nullptr;
  });
}

Status Index::SaveLayerIndex(const LayerIndexRow& row, const LayerEntrySource& next) {
  std::string op = "save layer index of " + row.digest.ToString();
  return NoThrow(path(), op, [&]() -> Status {
    auto body = [&]() -> Status {
      BCFS_RETURN_IF_ERROR(CheckDigest(row.digest, "the layer"));
      const std::string digest = row.digest.ToString();
      Transaction tx(db_.get());
      BCFS_RETURN_IF_ERROR(tx.BeginWrite());
      BCFS_RETURN_IF_ERROR(DeleteLayerRows(*db_, digest));
      {
        BCFS_ASSIGN_OR_RETURN(
            Stmt ins, db_->Prepare("INSERT INTO layer_indexes(digest, format, uncompressed_size, "
                                   "seek_index, warnings, derived_digests, indexed_ns) "
                                   "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)"));
        BCFS_RETURN_IF_ERROR(ins.Bind(1, digest)
                                 .Bind(2, row.format)
                                 .Bind(3, ToSql(row.uncompressed_size))
                                 .BindBlobNoCopy(4, row.seek_index)
                                 .Bind(5, row.warnings)
                                 .BindBlob(6, row.derived_digests)
                                 .Bind(7, row.indexed)
                                 .Run("insert the layer"));
      }
      BCFS_ASSIGN_OR_RETURN(
          Stmt ent,
          db_->Prepare("INSERT INTO layer_entries(digest, seq, path, type, mode, uid, gid, size, "
                       "mtime_sec, mtime_nsec, link_target, dev_major, dev_minor, data_offset, "
                       "extra) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, "
                       "?14, ?15)"));
      int64_t seq = 0;
      while (const LayerEntryRow* next_entry = next()) {
        const LayerEntryRow& e = *next_entry;
        BCFS_RETURN_IF_ERROR(ent.Bind(1, digest)
                                 .Bind(2, seq++)
                                 .Bind(3, e.path)
                                 .Bind(4, e.type)
                                 .Bind(5, e.mode)
                                 .Bind(6, e.uid)
                                 .Bind(7, e.gid)
                                 .Bind(8, ToSql(e.size))
                                 .Bind(9, e.mtime_sec)
                                 .Bind(10, e.mtime_nsec)
                                 .Bind(11, e.link_target)
                                 .Bind(12, e.dev_major)
                                 .Bind(13, e.dev_minor)
                                 .Bind(14, ToSql(e.data_offset))
                                 .BindBlob(15, e.extra)
                                 .Run("insert an entry"));
        ent.Reset();
      }
      return tx.Commit();
    };
    return db_->Context(body(), op);
  });
}

Result<std::optional<LayerIndexRow>> Index::LoadLayerIndex(const Digest& digest) {
  return LoadLayerIndex(digest, [](LayerIndexRow& head, LayerEntryRow&& e) {
    head.entries.push_back(std::move(e));
    return OkStatus();
  });
}

Result<std::optional<LayerIndexRow>> Index::LoadLayerIndex(const Digest& digest,
                                                           const LayerEntrySink& each) {
  std::string op = "load layer index of " + digest.ToString();
  return NoThrow(path(), op, [&]() -> Result<std::optional<LayerIndexRow>> {
    auto body = [&]() -> Result<std::optional<LayerIndexRow>> {
      const std::string key = digest.ToString();
      Transaction tx(db_.get());
      BCFS_RETURN_IF_ERROR(tx.BeginRead());
      LayerIndexRow row;
      {
        BCFS_ASSIGN_OR_RETURN(
            Stmt stmt,
            db_->Prepare("SELECT digest, format, uncompressed_size, seek_index, warnings, "
                         "derived_digests, indexed_ns FROM layer_indexes WHERE digest = ?1"));
        BCFS_ASSIGN_OR_RETURN(bool found, stmt.Bind(1, key).Step("query the layer"));
        if (!found) return std::optional<LayerIndexRow>();
        BCFS_ASSIGN_OR_RETURN(row.digest, ParseStoredDigest(stmt.Text(0), "stored layer digest"));
        row.format = static_cast<int>(stmt.Int(1));
        row.uncompressed_size = FromSql(stmt.Int(2));
        row.seek_index = stmt.Blob(3);
        row.warnings = stmt.Text(4);
        row.derived_digests = stmt.Blob(5);
        row.indexed = stmt.Int(6);
      }
      if (!each) {
        BCFS_RETURN_IF_ERROR(tx.Commit());
        return std::optional<LayerIndexRow>(std::move(row));
      }
      BCFS_ASSIGN_OR_RETURN(
          Stmt stmt, db_->Prepare("SELECT path, type, mode, uid, gid, size, mtime_sec, "
                                  "mtime_nsec, link_target, dev_major, dev_minor, data_offset, "
                                  "extra FROM layer_entries WHERE digest = ?1 ORDER BY seq"));
      stmt.Bind(1, key);
      while (true) {
        BCFS_ASSIGN_OR_RETURN(bool more, stmt.Step("query the entries"));
        if (!more) break;
        LayerEntryRow e;
        e.path = stmt.Text(0);
        e.type = stmt.Text(1);
        e.mode = static_cast<uint32_t>(stmt.Int(2));
        e.uid = static_cast<uint32_t>(stmt.Int(3));
        e.gid = static_cast<uint32_t>(stmt.Int(4));
        e.size = FromSql(stmt.Int(5));
        e.mtime_sec = stmt.Int(6);
        e.mtime_nsec = static_cast<uint32_t>(stmt.Int(7));
        e.link_target = stmt.Text(8);
        e.dev_major = static_cast<uint32_t>(stmt.Int(9));
        e.dev_minor = static_cast<uint32_t>(stmt.Int(10));
        e.data_offset = FromSql(stmt.Int(11));
        e.extra = stmt.Blob(12);
        BCFS_RETURN_IF_ERROR(each(row, std::move(e)));
      }
      BCFS_RETURN_IF_ERROR(tx.Commit());
      return std::optional<LayerIndexRow>(std::move(row));
    };
    auto r = body();
    if (!r.ok()) return db_->Context(r.status(), op);
    return r;
  });
}

Status Index::RemoveLayerIndex(const Digest& digest) {
  std::string op = "remove layer index of " + digest.ToString();
  return NoThrow(path(), op, [&]() -> Status {
    auto body = [&]() -> Status {
      Transaction tx(db_.get());
      BCFS_RETURN_IF_ERROR(tx.BeginWrite());
      BCFS_RETURN_IF_ERROR(DeleteLayerRows(*db_, digest.ToString()));
      return tx.Commit();
    };
    return db_->Context(body(), op);
  });
}

// AccessBatcher

void AccessBatcher::Touch(const Digest& digest, TimeNs when) {
  if (digest.empty()) return;
  try {
    std::lock_guard<std::mutex> lock(mu_);
    auto [it, inserted] = pending_.try_emplace(digest);
    Access& a = it->second;
    if (inserted) {
      a.digest = digest;
      a.when = when;
      a.count = 1;
    } else {
      a.when = std::max(a.when, when);
      ++a.count;
    }
  } catch (...) {
    // Out of memory: drop this access rather than fail a read over it.
  }
}

size_t AccessBatcher::PendingCount() const {
  std::lock_guard<std::mutex> lock(mu_);
  return pending_.size();
}

Status AccessBatcher::Flush(Index& index) {
  std::unordered_map<Digest, Access> taken;
  {
    std::lock_guard<std::mutex> lock(mu_);
    taken.swap(pending_);
  }
  if (taken.empty()) return OkStatus();
  Status st;
  try {
    std::vector<Access> batch;
    batch.reserve(taken.size());
    for (const auto& [digest, a] : taken) batch.push_back(a);
    // A fixed order keeps runs reproducible.
    std::sort(batch.begin(), batch.end(),
              [](const Access& x, const Access& y) { return x.digest < y.digest; });
    st = index.RecordAccesses(batch);
  } catch (const std::exception& e) {
    st = InternalError(std::string("flush accesses: ") + e.what());
  }
  if (st.ok()) return st;
  // Put them back, combined with touches that arrived during the flush.
  std::lock_guard<std::mutex> lock(mu_);
  try {
    pending_.merge(taken);  // moves the nodes whose digest is not pending
    for (auto& [digest, a] : taken) {
      Access& p = pending_.at(digest);
      p.when = std::max(p.when, a.when);
      p.count += a.count;
    }
  } catch (...) {
    // Out of memory while rehashing: those accesses are lost (advisory).
  }
  return st;
}

}  // namespace bcfs::index
