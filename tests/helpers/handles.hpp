// Descriptors of three kinds holding a text, and reading that text back: what the handle
// passing tests send over channels (both the test binary and the helper child use them).
#pragma once

#include <cstdio>
#include <cstdlib>
#include <fcntl.h>
#include <string>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

namespace handles {

inline void write_text(int fd, const std::string& text) {
  for (std::size_t done = 0; done < text.size();) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n <= 0)
      std::abort();
    done += static_cast<std::size_t>(n);
  }
}

// A descriptor of `kind` ("pipe": a pipe's read end; "socket": one end of a socketpair; "file": an
// unlinked regular file) from which `text` can be read.
inline int make(const std::string& kind, const std::string& text) {
  int ends[2];
  if (kind == "pipe" || kind == "socket") {
    if (kind == "pipe" ? ::pipe2(ends, O_CLOEXEC)
                       : ::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ends))
      std::abort();
    write_text(ends[1], text);
    ::close(ends[1]);
    return ends[0];
  }
  char path[] = "/tmp/childproc-handle-XXXXXX";
  const int fd = ::mkostemp(path, O_CLOEXEC);
  if (fd < 0)
    std::abort();
  ::unlink(path);
  write_text(fd, text);
  return fd;
}

// What `fd` is ("pipe", "socket", "file") and what it holds (a file from its start, the others
// to EOF).
inline std::string kind_of(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0)
    return "closed";
  return S_ISFIFO(st.st_mode)   ? "pipe"
         : S_ISSOCK(st.st_mode) ? "socket"
         : S_ISREG(st.st_mode)  ? "file"
                                : "other";
}

inline std::string read_text(int fd) {
  std::string text;
  char buffer[4096];
  off_t at = 0;
  const bool file = kind_of(fd) == "file";
  for (;;) {
    const ssize_t n =
        file ? ::pread(fd, buffer, sizeof buffer, at) : ::read(fd, buffer, sizeof buffer);
    if (n <= 0)
      return text;
    text.append(buffer, static_cast<std::size_t>(n));
    at += n;
  }
}

} // namespace handles
