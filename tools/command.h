// command.h — subcommands of the `dsa` program register themselves here, one file each
// (tools/cmd_<name>.cpp), so adding a command never edits the dispatcher.
#pragma once

#include <climits>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace dsa::cli {

using Args = std::vector<std::string>;           // arguments after the subcommand name
using CommandFn = std::function<int(const Args&)>;

struct Command {
  std::string summary;                           // one line for `dsa help`
  CommandFn run;
  std::string usage;                             // printed by `dsa <command> --help` ("" = the summary)
};

std::map<std::string, Command>& commands();

struct Register {
  Register(const std::string& name, const std::string& summary, CommandFn fn, const std::string& usage = "") {
    commands()[name] = Command{summary, std::move(fn), usage};
  }
};

// Thrown by Flags when --help or -h stands where a flag may stand; the dispatcher (dsa_main.cpp)
// prints the command's usage to stdout and exits 0.
struct HelpRequested {};

// The flag parser every command uses, with the conventions of llama.cpp / Hugging Face tools:
//   --name value, --name=value, -x value (a short alias), --switch; --help / -h anywhere a flag may
//   stand (HelpRequested). Unknown flags, missing values, a value given to a switch and more
//   positional arguments than max_positional throw dsa::Error naming the argument.
// Numbers are parsed as int64 / double and range-checked (never narrowed): a value outside
// [lo, hi] throws dsa::Error naming the flag and the range.
class Flags {
 public:
  Flags(const Args& args, const std::vector<std::string>& with_value, const std::vector<std::string>& switches,
        const std::map<std::string, std::string>& aliases = {}, size_t max_positional = 0);
  bool has(const std::string& name) const;
  std::string get(const std::string& name, const std::string& fallback = "") const;
  std::string require(const std::string& name) const;
  long long get_int(const std::string& name, long long fallback, long long lo = LLONG_MIN, long long hi = LLONG_MAX) const;
  // get_int into an int: the range [lo, hi] must lie inside int's.
  int get_i32(const std::string& name, int fallback, int lo = INT_MIN, int hi = INT_MAX) const;
  double get_double(const std::string& name, double fallback, double lo = -1e308, double hi = 1e308) const;
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  std::map<std::string, std::string> values_;
  std::vector<std::string> positional_;
};

// Parses an integer with the same rules (whole string, int64, inside [lo, hi]); `what` names it in
// the error ("--ks", "--synthetic-mix item").
long long parse_int(const std::string& what, const std::string& text, long long lo, long long hi);
double parse_double(const std::string& what, const std::string& text, double lo, double hi);

// --threads N of every command that computes (0 = OpenMP's default).
void apply_threads(const Flags& f);

}  // namespace dsa::cli
