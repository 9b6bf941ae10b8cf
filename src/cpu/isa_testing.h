// isa_testing.h — switching the CPU ISA path inside one process, for tests that compare the paths'
// outputs (tests/cpu_isa.cpp). Not public API; not thread-safe against ops running concurrently.
#pragma once

#include "dsa/cpu_isa.h"

namespace dsa::cpu::detail {

// Makes isa() return `isa` until the next call (dsa::Error if this CPU lacks it); returns the path
// in use before. A restore with the returned value goes back to the process's own choice.
Isa set_isa_for_testing(Isa isa);

}  // namespace dsa::cpu::detail
