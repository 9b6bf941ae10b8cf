// dsa — the command-line program. `dsa help` lists the subcommands registered in tools/cmd_*.cpp.
#include <omp.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <new>
#include <string>

#include "command.h"
#include "dsa/model.h"
#include "dsa/ops.h"

namespace dsa::cli {

std::map<std::string, Command>& commands() {
  static std::map<std::string, Command> all;
  return all;
}

long long parse_int(const std::string& what, const std::string& text, long long lo, long long hi) {
  const std::string range = "[" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
  char* stop = nullptr;
  errno = 0;
  const long long x = text.empty() ? 0 : std::strtoll(text.c_str(), &stop, 10);
  if (text.empty() || *stop != '\0' || text.find_first_of(" \t\n") != std::string::npos)
    throw Error(what + " expects an integer, got \"" + text + "\"");
  if (errno == ERANGE || x < lo || x > hi) throw Error(what + " = " + text + " is out of range " + range);
  return x;
}

double parse_double(const std::string& what, const std::string& text, double lo, double hi) {
  char* stop = nullptr;
  errno = 0;
  const double x = text.empty() ? 0 : std::strtod(text.c_str(), &stop);
  if (text.empty() || *stop != '\0' || text.find_first_of(" \t\n") != std::string::npos)
    throw Error(what + " expects a number, got \"" + text + "\"");
  if (errno == ERANGE || !std::isfinite(x) || x < lo || x > hi) {
    char buf[96];
    std::snprintf(buf, sizeof buf, " is out of range [%g, %g]", lo, hi);
    throw Error(what + " = " + text + buf);
  }
  return x;
}

Flags::Flags(const Args& args, const std::vector<std::string>& with_value, const std::vector<std::string>& switches,
             const std::map<std::string, std::string>& aliases, size_t max_positional) {
  auto in = [](const std::vector<std::string>& v, const std::string& s) {
    for (const auto& x : v)
      if (x == s) return true;
    return false;
  };
  bool only_positional = false;   // after "--"
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (!only_positional && (a == "--help" || a == "-h")) throw HelpRequested{};
    if (!only_positional && a == "--") {
      only_positional = true;
      continue;
    }
    std::string name, inline_value;
    bool has_inline = false;
    if (!only_positional && a.rfind("--", 0) == 0) {
      name = a.substr(2);
      const size_t eq = name.find('=');
      if (eq != std::string::npos) {
        inline_value = name.substr(eq + 1);
        name = name.substr(0, eq);
        has_inline = true;
      }
    } else if (!only_positional && a.size() >= 2 && a[0] == '-' && !(a[1] >= '0' && a[1] <= '9') && a[1] != '.') {
      auto it = aliases.find(a);
      if (it == aliases.end()) throw Error("unknown flag " + a);
      name = it->second;
    } else {
      positional_.push_back(a);
      if (positional_.size() > max_positional)
        throw Error("unexpected argument \"" + a + "\"" + (max_positional == 0 ? " (this command takes only flags)" : ""));
      continue;
    }
    if (in(switches, name)) {
      if (has_inline) throw Error("flag --" + name + " takes no value");
      values_[name] = std::string(1, '1');   // a switch that is present reads "1" (not = "1": GCC 12 -Wrestrict false positive)
    } else if (in(with_value, name)) {
      if (has_inline) {
        values_[name] = inline_value;
      } else {
        if (i + 1 >= args.size()) throw Error("flag --" + name + " needs a value");
        values_[name] = args[++i];
      }
    } else {
      throw Error("unknown flag --" + name + " (see --help)");
    }
  }
}
bool Flags::has(const std::string& name) const { return values_.count(name) != 0; }
std::string Flags::get(const std::string& name, const std::string& fallback) const {
  auto it = values_.find(name);
  return it == values_.end() ? fallback : it->second;
}
std::string Flags::require(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end()) throw Error("missing required flag --" + name);
  return it->second;
}
long long Flags::get_int(const std::string& name, long long fallback, long long lo, long long hi) const {
  if (!has(name)) return fallback;
  return parse_int("flag --" + name, get(name), lo, hi);
}
int Flags::get_i32(const std::string& name, int fallback, int lo, int hi) const {
  return static_cast<int>(get_int(name, fallback, lo, hi));   // in range by construction
}
double Flags::get_double(const std::string& name, double fallback, double lo, double hi) const {
  if (!has(name)) return fallback;
  return parse_double("flag --" + name, get(name), lo, hi);
}

void apply_threads(const Flags& f) {
  const int n = f.get_i32("threads", 0, 0, 4096);
  if (n > 0) omp_set_num_threads(n);
}

namespace {
// OpenMP threads spin between parallel regions by default (libgomp: ~300k iterations). On a machine
// whose other cores are busy, a spinning worker takes the time slice the busy core's owner or the
// master needs, and a decode step of many short regions slows 500x (docs/perf.md "Decode on a busy
// machine"). The runtime reads OMP_WAIT_POLICY once, when it loads, so the program re-executes
// itself once with OMP_WAIT_POLICY=passive unless the caller chose a policy.
void ensure_passive_waits(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr || std::getenv("GOMP_SPINCOUNT") != nullptr) return;
  if (setenv("OMP_WAIT_POLICY", "passive", 1) != 0) return;
  execv("/proc/self/exe", argv);   // returns only on failure: then run on with the runtime's default
}
}  // namespace

// --max-memory SIZE (every command; bytes, or with a K/M/G/T suffix): the limit the size checks refuse
// beyond (the library's DSA_MAX_MEMORY). Taken out of the arguments before the command parses them;
// a bad size is refused here, naming the flag, before the command runs.
void take_max_memory(Args& args) {
  for (size_t i = 0; i < args.size(); ++i) {
    std::string value;
    size_t used = 0;
    if (args[i] == "--max-memory") {
      if (i + 1 >= args.size()) throw dsa::Error("flag --max-memory needs a value (bytes, or with a K/M/G/T suffix)");
      value = args[i + 1];
      used = 2;
    } else if (args[i].rfind("--max-memory=", 0) == 0) {
      value = args[i].substr(std::string("--max-memory=").size());
      used = 1;
    } else {
      continue;
    }
    setenv("DSA_MAX_MEMORY", value.c_str(), 1);
    try {
      dsa::model::memory_limit_bytes();
    } catch (const std::exception&) {
      throw dsa::Error("flag --max-memory = " + value + " must be a positive size in bytes (suffixes K, M, G, T)");
    }
    args.erase(args.begin() + static_cast<std::ptrdiff_t>(i), args.begin() + static_cast<std::ptrdiff_t>(i + used));
    --i;
  }
}

}  // namespace dsa::cli

int main(int argc, char** argv) {
  using namespace dsa::cli;
  ensure_passive_waits(argv);
  const std::string name = argc > 1 ? argv[1] : "help";
  if (name == "help" || name == "--help" || name == "-h") {
    std::printf("usage: dsa <command> [flags]     (dsa <command> --help: the command's flags)\n\ncommands:\n");
    for (const auto& [n, c] : commands()) std::printf("  %-12s %s\n", n.c_str(), c.summary.c_str());
    std::printf("\nflags take --name value or --name=value; every command answers -h/--help; dsa --version prints the version.\n");
    return 0;
  }
  const std::string cmd = name == "--version" || name == "-V" ? "version" : name;
  auto it = commands().find(cmd);
  if (it == commands().end()) {
    std::fprintf(stderr, "dsa: unknown command \"%s\" (try `dsa help`)\n", name.c_str());
    return 2;
  }
  Args args(argv + 2, argv + argc);
  try {
    take_max_memory(args);
    return it->second.run(args);
  } catch (const HelpRequested&) {
    const Command& c = it->second;
    std::printf("%s", (c.usage.empty() ? "usage: dsa " + cmd + " — " + c.summary + "\n" : c.usage).c_str());
    return 0;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "dsa %s: error: out of memory (std::bad_alloc); DSA_MAX_MEMORY=<bytes> makes the size checks "
                 "refuse with the numbers before allocating\n", cmd.c_str());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dsa %s: error: %s\n", cmd.c_str(), e.what());
    return 1;
  }
}
