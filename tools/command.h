// command.h — subcommands of the `dsa` program register themselves here, one file each
// (tools/cmd_<name>.cpp), so adding a command never edits the dispatcher.
#pragma once

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
};

std::map<std::string, Command>& commands();

struct Register {
  Register(const std::string& name, const std::string& summary, CommandFn fn) {
    commands()[name] = Command{summary, std::move(fn)};
  }
};

// Small flag parser shared by the commands: "--name value" and "--flag" forms. Unknown flags and
// missing values throw dsa::Error naming the flag.
class Flags {
 public:
  Flags(const Args& args, const std::vector<std::string>& with_value, const std::vector<std::string>& switches);
  bool has(const std::string& name) const;
  std::string get(const std::string& name, const std::string& fallback = "") const;
  std::string require(const std::string& name) const;
  long long get_int(const std::string& name, long long fallback) const;
  double get_double(const std::string& name, double fallback) const;
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  std::map<std::string, std::string> values_;
  std::vector<std::string> positional_;
};

}  // namespace dsa::cli
