// The buffer that stdio streams and channels read into (internal).
//
// One buffer per thread, shared by every stream and channel of that thread: what is read is
// delivered to the handlers before the next read, so 500 idle children cost no buffer memory.
// A handler may run a nested event loop on the same thread (exec_sync inside a data handler):
// the reads of that loop must not overwrite the chunk the outer handler is still looking at. So
// the buffer is leased for a read-and-deliver, and a lease taken while the thread's buffer is
// already leased gets a buffer of its own.
#pragma once

#include <cstddef>
#include <memory>

namespace childproc::detail {

class read_buffer_lease {
public:
  static constexpr std::size_t capacity = 256 * 1024;

  read_buffer_lease() {
    slot& s = thread_slot();
    if (s.leased) {
      own_.reset(new char[capacity]);
      data_ = own_.get();
      return;
    }
    if (!s.data)
      s.data.reset(new char[capacity]);
    s.leased = true;
    slot_ = &s;
    data_ = s.data.get();
  }
  ~read_buffer_lease() {
    if (slot_)
      slot_->leased = false;
  }
  read_buffer_lease(const read_buffer_lease&) = delete;
  read_buffer_lease& operator=(const read_buffer_lease&) = delete;

  char* data() const noexcept { return data_; }

private:
  struct slot {
    std::unique_ptr<char[]> data;
    bool leased = false;
  };
  static slot& thread_slot() noexcept {
    static thread_local slot s;
    return s;
  }

  slot* slot_ = nullptr;
  std::unique_ptr<char[]> own_;
  char* data_ = nullptr;
};

} // namespace childproc::detail
