// The non-template half of the boundary wrappers.
#include "boundary.h"

namespace safe_upgrade::pg {

void RaiseError(int sqlstate, const char* message, const char* detail, const char* hint) {
  ereport(ERROR, (errcode(sqlstate), errmsg("%s", message), detail ? errdetail("%s", detail) : 0,
                  hint ? errhint("%s", hint) : 0));
  pg_unreachable();
}

}  // namespace safe_upgrade::pg
