// The CPU time of another process, for the bench programs' cost rows.
#pragma once

#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <sys/types.h>
#include <unistd.h>

// utime + stime of `pid` (/proc/<pid>/stat), in seconds; 0 once it is gone.
inline double process_cpu_seconds(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  const auto end_of_name = text.rfind(')'); // the command name may hold spaces
  if (end_of_name == std::string::npos)
    return 0;
  std::istringstream rest(text.substr(end_of_name + 2));
  std::string skipped;
  for (int i = 0; i < 11; ++i) // state ... cmajflt: fields 3 to 13
    rest >> skipped;
  double user = 0, sys = 0;
  rest >> user >> sys;
  return (user + sys) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}
