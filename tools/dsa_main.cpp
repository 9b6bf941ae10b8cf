// dsa — the command-line program. `dsa help` lists the subcommands registered in tools/cmd_*.cpp.
#include <cstdio>
#include <exception>
#include <new>
#include <string>

#include "command.h"
#include "dsa/ops.h"

namespace dsa::cli {

std::map<std::string, Command>& commands() {
  static std::map<std::string, Command> all;
  return all;
}

Flags::Flags(const Args& args, const std::vector<std::string>& with_value, const std::vector<std::string>& switches) {
  auto in = [](const std::vector<std::string>& v, const std::string& s) {
    for (const auto& x : v)
      if (x == s) return true;
    return false;
  };
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.rfind("--", 0) != 0) {
      positional_.push_back(a);
      continue;
    }
    const std::string name = a.substr(2);
    if (in(switches, name)) {
      values_[name] = std::string(1, '1');   // a switch that is present reads "1" (not = "1": GCC 12 -Wrestrict false positive)
    } else if (in(with_value, name)) {
      if (i + 1 >= args.size()) throw Error("flag --" + name + " needs a value");
      values_[name] = args[++i];
    } else {
      throw Error("unknown flag --" + name);
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
long long Flags::get_int(const std::string& name, long long fallback) const {
  if (!has(name)) return fallback;
  const std::string v = get(name);
  size_t used = 0;
  long long x = 0;
  try {
    x = std::stoll(v, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != v.size() || v.empty()) throw Error("flag --" + name + " expects an integer, got \"" + v + "\"");
  return x;
}
double Flags::get_double(const std::string& name, double fallback) const {
  if (!has(name)) return fallback;
  const std::string v = get(name);
  size_t used = 0;
  double x = 0;
  try {
    x = std::stod(v, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != v.size() || v.empty()) throw Error("flag --" + name + " expects a number, got \"" + v + "\"");
  return x;
}

}  // namespace dsa::cli

int main(int argc, char** argv) {
  using namespace dsa::cli;
  const std::string name = argc > 1 ? argv[1] : "help";
  if (name == "help" || name == "--help" || name == "-h") {
    std::printf("usage: dsa <command> [flags]\n\ncommands:\n");
    for (const auto& [n, c] : commands()) std::printf("  %-12s %s\n", n.c_str(), c.summary.c_str());
    return 0;
  }
  auto it = commands().find(name);
  if (it == commands().end()) {
    std::fprintf(stderr, "dsa: unknown command \"%s\" (try `dsa help`)\n", name.c_str());
    return 2;
  }
  try {
    return it->second.run(Args(argv + 2, argv + argc));
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "dsa %s: error: out of memory (std::bad_alloc); DSA_MAX_MEMORY=<bytes> makes the size checks "
                 "refuse with the numbers before allocating\n", name.c_str());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dsa %s: error: %s\n", name.c_str(), e.what());
    return 1;
  }
}
