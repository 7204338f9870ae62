// Included first by every .cpp in extension/src/core and extension/src/rpc: those files are pure
// C++ (GoogleTest runs them without a server, and gRPC/absl break under postgres.h's macros), so
// PostgreSQL's server headers must never reach them. Two compile-time checks:
//  - postgres.h already included before this header: #error;
//  - postgres.h included after it: its typedef of Datum hits the poisoned identifier below
//    ("attempt to use poisoned Datum"), and so does any code using PostgreSQL's Datum or ereport.
// Files in extension/src/pg/ include postgres.h (through pg/boundary.h) and never this header.
#pragma once

#ifdef POSTGRES_H
#error "a pure C++ file (extension/src/core, extension/src/rpc) must not include postgres.h"
#endif

#pragma GCC poison Datum ereport
