// The --json document of `run` and `status` (fields documented in docs/cli.md).
#pragma once

#include <nlohmann/json.hpp>

#include "upgrade_doc.h"

namespace safe_upgrade::cli {

nlohmann::json DocToJson(const UpgradeDoc& doc);

}  // namespace safe_upgrade::cli
