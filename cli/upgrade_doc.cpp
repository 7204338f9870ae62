// Reading an upgrade from the catalog (see upgrade_doc.h).
#include "upgrade_doc.h"

#include "output.h"

namespace safe_upgrade::cli {

using nlohmann::json;

std::string UpgradeDoc::State() const { return JsonString(upgrade, "state"); }
std::string UpgradeDoc::Extname() const { return JsonString(upgrade, "extname"); }
std::string UpgradeDoc::FromVersion() const { return JsonString(upgrade, "from_version"); }
std::string UpgradeDoc::ToVersion() const { return JsonString(upgrade, "to_version"); }
const json& UpgradeDoc::Report() const { return JsonMember(upgrade, "report"); }

std::optional<UpgradeDoc> LoadUpgradeDoc(PgConn& conn, int64_t id, int64_t after_event_id) {
  auto r = conn.Exec(
      "SELECT jsonb_build_object("
      "  'upgrade', to_jsonb(u),"
      "  'created_epoch', extract(epoch FROM u.created_at),"
      "  'updated_epoch', extract(epoch FROM u.updated_at),"
      "  'now_epoch', extract(epoch FROM clock_timestamp()),"
      "  'restore_point', (SELECT to_jsonb(rp) FROM safe_upgrade.restore_points rp WHERE rp.upgrade_id = "
      "u.id),"
      "  'databases', coalesce((SELECT jsonb_agg(to_jsonb(d) - 'upgrade_id' ORDER BY d.datname) "
      "FROM safe_upgrade.upgrade_databases d WHERE d.upgrade_id = u.id), '[]'),"
      "  'standbys', coalesce((SELECT jsonb_agg(to_jsonb(s) - 'upgrade_id' ORDER BY s.name) "
      "FROM safe_upgrade.upgrade_standbys s WHERE s.upgrade_id = u.id), '[]'),"
      "  'events', coalesce((SELECT jsonb_agg(to_jsonb(e) || jsonb_build_object('at_epoch', extract(epoch "
      "FROM e.at))"
      "                                       ORDER BY e.id)"
      "                      FROM safe_upgrade.events e WHERE e.upgrade_id = u.id AND e.id > $2::bigint), "
      "'[]'))::text "
      "FROM safe_upgrade.upgrades u WHERE u.id = $1::bigint",
      {std::to_string(id), std::to_string(after_event_id)});
  if (r.Empty() || !r.rows[0][0]) return std::nullopt;
  json j = json::parse(*r.rows[0][0]);
  UpgradeDoc doc;
  doc.id = id;
  doc.upgrade = j["upgrade"];
  doc.restore_point = j["restore_point"];
  doc.databases = j["databases"];
  doc.standbys = j["standbys"];
  doc.events = j["events"];
  doc.created_epoch = JsonNumber(j, "created_epoch").value_or(0);
  doc.updated_epoch = JsonNumber(j, "updated_epoch").value_or(0);
  doc.now_epoch = JsonNumber(j, "now_epoch").value_or(0);
  return doc;
}

std::optional<int64_t> CurrentUpgradeId(PgConn& conn) {
  auto r = conn.Exec(
      "SELECT id::text FROM safe_upgrade.upgrades "
      "ORDER BY (state IN ('queued', 'snapshotting', 'dry_running', 'awaiting_approval', 'scheduled', "
      "'applying', "
      "'verifying', 'rolling_back')) DESC, id DESC LIMIT 1");
  if (r.Empty() || !r.rows[0][0]) return std::nullopt;
  return std::stoll(*r.rows[0][0]);
}

}  // namespace safe_upgrade::cli
