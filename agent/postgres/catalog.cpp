// Catalog access for the agent.
#include "postgres/catalog.h"

#include <algorithm>
#include <stdexcept>

#include "base/fs_util.h"

namespace safe_upgrade {

std::string UpgradeRecord::LockTimeout() const {
  auto it = options.find("lock_timeout");
  return it != options.end() && it->is_string() ? it->get<std::string>() : "2s";
}

int UpgradeRecord::MaxLockRetries() const {
  auto it = options.find("max_lock_retries");
  if (it == options.end()) return 5;
  if (it->is_number_integer()) return it->get<int>();
  if (it->is_string()) return std::stoi(it->get<std::string>());
  return 5;
}

std::unique_ptr<PgConn> ConnectProduction(const AgentConfig& config, const std::string& application_name,
                                          const std::string& datname) {
  return std::make_unique<PgConn>(config.ConnInfo(application_name, datname));
}

std::vector<std::string> UpgradeDatabase::FamilyNames() const {
  std::vector<std::string> out;
  for (const auto& m : family) out.push_back(m.extname);
  return out;
}

UpgradeRecord LoadUpgrade(PgConn& conn, int64_t upgrade_id) {
  auto r = conn.Exec(
      "SELECT extname, from_version, to_version, state, options::text "
      "FROM safe_upgrade.upgrades WHERE id = $1::bigint",
      {std::to_string(upgrade_id)});
  if (r.rows.empty()) throw std::runtime_error("upgrade " + std::to_string(upgrade_id) + " does not exist");
  const auto& row = r.rows[0];
  UpgradeRecord u;
  u.id = upgrade_id;
  u.extname = row[0].value_or("");
  u.from_version = row[1].value_or("");
  u.to_version = row[2].value_or("");
  u.state = row[3].value_or("");
  u.options = nlohmann::json::parse(row[4].value_or("{}"));
  auto dbs = conn.Exec(
      "SELECT datname, from_version, array_to_json(update_path)::text, family::text "
      "FROM safe_upgrade.upgrade_databases WHERE upgrade_id = $1::bigint ORDER BY datname",
      {std::to_string(upgrade_id)});
  for (const auto& db : dbs.rows) {
    UpgradeDatabase d{db[0].value_or(""), db[1].value_or(""), {}, {}};
    for (const auto& hop : nlohmann::json::parse(db[2].value_or("[]")))
      d.update_path.push_back(hop.get<std::string>());
    for (const auto& m : nlohmann::json::parse(db[3].value_or("[]"))) {
      FamilyMember member{m.value("extname", ""), m.value("from_version", ""), {}};
      if (member.extname.empty()) continue;
      if (m.contains("update_path") && m["update_path"].is_array())
        for (const auto& hop : m["update_path"]) member.update_path.push_back(hop.get<std::string>());
      d.family.push_back(std::move(member));
    }
    std::sort(d.family.begin(), d.family.end(),
              [](const FamilyMember& a, const FamilyMember& b) { return a.extname < b.extname; });
    u.databases.push_back(std::move(d));
  }
  if (u.databases.empty())
    throw std::runtime_error("upgrade " + std::to_string(upgrade_id) + " names no database to upgrade");
  return u;
}

std::vector<HealthCheckRecord> LoadHealthChecks(PgConn& conn, const UpgradeRecord& upgrade,
                                                const UpgradeDatabase& db) {
  std::vector<std::string> extnames = db.FamilyNames();
  extnames.insert(extnames.begin(), upgrade.extname);
  auto r = conn.Exec(
      "SELECT id::text, name, check_sql, timeout::text, extname, datname, created_by FROM "
      "safe_upgrade.health_checks "
      "WHERE (extname IS NULL OR extname::text = ANY ($1::text[])) "
      "  AND (datname IS NULL OR datname = $2) ORDER BY id",
      {ArrayLiteral(extnames), db.datname});
  std::vector<HealthCheckRecord> out;
  for (const auto& row : r.rows)
    out.push_back(HealthCheckRecord{std::stoll(*row[0]), *row[1], *row[2], *row[3], row[4], row[5],
                                    row[6].value_or("")});
  return out;
}

std::optional<RestorePointRecord> LoadRestorePoint(PgConn& conn, int64_t upgrade_id) {
  auto r = conn.Exec(
      "SELECT name, lsn::text, coalesce(wal_segment, ''), coalesce(backup_stop_lsn::text, ''), "
      "coalesce(xid::text, ''), timeline::text FROM safe_upgrade.restore_points WHERE upgrade_id = "
      "$1::bigint",
      {std::to_string(upgrade_id)});
  if (r.rows.empty()) return std::nullopt;
  const auto& row = r.rows[0];
  return RestorePointRecord{*row[0], *row[1], *row[2], *row[3], *row[4], std::stoi(*row[5])};
}

std::string SnapshotIdFor(int64_t upgrade_id) { return "snap-" + std::to_string(upgrade_id); }

std::string SnapshotDir(const AgentConfig& config, const std::string& snapshot_id) {
  return JoinPath(config.snapshot_dir, snapshot_id);
}

std::string SnapshotDataDir(const AgentConfig& config, const std::string& snapshot_id) {
  return JoinPath(SnapshotDir(config, snapshot_id), "data");
}

std::string SnapshotMetaPath(const AgentConfig& config, const std::string& snapshot_id) {
  return JoinPath(SnapshotDir(config, snapshot_id), "snapshot.json");
}

nlohmann::json LoadSnapshotMeta(const AgentConfig& config, const std::string& snapshot_id) {
  std::string path = SnapshotMetaPath(config, snapshot_id);
  if (!PathExists(path))
    throw std::runtime_error("snapshot " + snapshot_id + " does not exist (no " + path + ")");
  auto meta = nlohmann::json::parse(ReadFile(path));
  if (!meta.value("verified", false))
    throw std::runtime_error("snapshot " + snapshot_id + " was not verified");
  return meta;
}

std::set<int64_t> UpgradeIdsInStates(PgConn& conn, const std::vector<std::string>& states) {
  std::string array = "{";
  for (const auto& st : states) array += (array.size() > 1 ? "," : "") + st;
  array += "}";
  auto r = conn.Exec("SELECT id::text FROM safe_upgrade.upgrades WHERE state = ANY ($1::text[])", {array});
  std::set<int64_t> ids;
  for (const auto& row : r.rows)
    if (row[0]) ids.insert(std::stoll(*row[0]));
  return ids;
}

}  // namespace safe_upgrade
