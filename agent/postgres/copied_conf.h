// A postgresql.conf copied from another server (production's, into a dry-run clone) with the
// settings that would point the copy at the original's files commented out.
#pragma once

#include <string>

namespace safe_upgrade {

// Comments out data_directory, hba_file, ident_file, external_pid_file and config_file; relative
// includes of a file that lived in origin_dir are made absolute so they still resolve.
std::string SanitizeCopiedConf(const std::string& text, const std::string& origin_dir);

}  // namespace safe_upgrade
