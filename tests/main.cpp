// The test runner. Raises the soft fd limit to the hard one first (as Node does at startup), so
// the many-children tests measure the library, not the shell's default limit.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <sys/resource.h>

int main(int argc, char** argv) {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) == 0) {
    limit.rlim_cur = limit.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &limit);
  }
  return Catch::Session().run(argc, argv);
}
