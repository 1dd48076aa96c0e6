// An owned file descriptor, closed on destruction.
#pragma once

#include <cerrno>
#include <fcntl.h>
#include <unistd.h>
#include <utility>

namespace childproc::detail::posix {

class unique_fd {
public:
  unique_fd() noexcept = default;
  explicit unique_fd(int fd) noexcept : fd_(fd) {}
  unique_fd(unique_fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  unique_fd& operator=(unique_fd&& o) noexcept {
    if (this != &o)
      reset(std::exchange(o.fd_, -1));
    return *this;
  }
  ~unique_fd() { reset(); }

  int get() const noexcept { return fd_; }
  explicit operator bool() const noexcept { return fd_ >= 0; }
  int release() noexcept { return std::exchange(fd_, -1); }
  void reset(int fd = -1) noexcept {
    if (fd_ >= 0)
      ::close(fd_);
    fd_ = fd;
  }

private:
  int fd_ = -1;
};

// Descriptors 0..2 are the application's stdio: a descriptor the library creates while one of
// them is closed lands there and would then be taken for the application's own (an `inherit`
// slot, a worker's stdin). Every fd the library creates goes through this: one below 3 is moved
// to the lowest free fd >= 3 (CLOEXEC) and the original closed. Returns the fd, or -1 with errno
// set (the original is closed then too).
inline int above_stdio(int fd) noexcept {
  if (fd < 0 || fd > 2)
    return fd;
  const int moved = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
  const int saved = errno;
  ::close(fd);
  errno = saved;
  return moved;
}

} // namespace childproc::detail::posix
