// The event handler lists of every childproc object (internal).
//
// One implementation of "call the handlers of an event" so that its rules hold everywhere:
//  - a handler may add handlers to the list it is called from: each handler lives in its own
//    allocation, which an add never moves (only the vector of pointers grows), and an emit calls
//    only the handlers that were there when it began (Node's rule). An empty list allocates
//    nothing, nor does moving one (a std::deque allocates on both: two mallocs and 576 bytes for
//    every list of every child, channel and stream, used or not);
//  - a handler that throws ends the emit (the later handlers of that event are not called, as
//    with Node's emitter) and the exception propagates to the caller, i.e. out of io.run(); the
//    owner finishes its own bookkeeping before it emits, so its state stays consistent;
//  - release() drops every handler once the last event of the list was delivered, so that a
//    handler capturing its owner does not keep it alive; a release asked for during an emit waits
//    until that emit has ended (the running handler is never destroyed under itself), and
//    handlers added after a release are dropped at once.
#pragma once

#include <cstddef>
#include <memory>
#include <utility>
#include <vector>

namespace childproc::detail {

template <class Handler>
class handler_list {
public:
  void add(Handler handler) {
    if (!released_ && handler)
      handlers_.push_back(std::make_unique<Handler>(std::move(handler)));
  }
  bool empty() const noexcept { return handlers_.empty(); }
  std::size_t size() const noexcept { return handlers_.size(); }

  template <class... Args>
  void emit(const Args&... args) {
    const std::size_t n = handlers_.size();
    emitting_guard guard(*this);
    for (std::size_t i = 0; i < n; ++i) {
      Handler& handler = *handlers_[i]; // stays put while an add grows the vector
      handler(args...);
    }
  }

  // Drops every handler (now, or when the emit under way ends).
  void release() noexcept {
    released_ = true;
    if (depth_ == 0)
      handlers_.clear();
  }

private:
  struct emitting_guard {
    explicit emitting_guard(handler_list& l) noexcept : list(l) { ++list.depth_; }
    ~emitting_guard() {
      if (--list.depth_ == 0 && list.released_)
        list.handlers_.clear();
    }
    emitting_guard(const emitting_guard&) = delete;
    emitting_guard& operator=(const emitting_guard&) = delete;
    handler_list& list;
  };

  std::vector<std::unique_ptr<Handler>> handlers_;
  int depth_ = 0;
  bool released_ = false;
};

} // namespace childproc::detail
