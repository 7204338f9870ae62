// The fault-injection suite and the agent security tests document themselves: each case records
// the fault (or bad input) it injects and the outcome it asserts, and a listener writes them,
// with the observed result, as a Markdown table
// (docs/faults.md and docs/bad-inputs.md are generated this way; see fault_report.cpp).
#pragma once

#include <string>

namespace safe_upgrade::testing {

// Call once per test: what is injected, and the end state the test asserts.
void RecordFault(const std::string& fault, const std::string& expected_outcome);

}  // namespace safe_upgrade::testing
