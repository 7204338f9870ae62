// The extension's settings (defined in module.cpp; documented in docs/configuration.md).
#pragma once

namespace safe_upgrade::pg {
extern bool guc_enabled;
extern char* guc_database;
extern char* guc_agent_address;
extern int guc_agent_check_interval_ms;
extern int guc_agent_timeout_ms;
extern int guc_poll_interval_ms;
extern int guc_archive_wait_timeout_s;
extern int guc_agent_unreachable_timeout_s;
extern char* guc_agent_tls_ca_file;
extern char* guc_agent_tls_cert_file;
extern char* guc_agent_tls_key_file;
}  // namespace safe_upgrade::pg
