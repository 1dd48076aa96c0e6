// A pending completion handler behind a virtual call, so that an asynchronous operation is
// compiled once in the library whatever the token (internal).
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/append.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>

#include <memory>
#include <type_traits>
#include <utility>

namespace childproc::detail {

template <class... Args>
struct completion {
  virtual ~completion() = default;
  // Posts the handler with `args` to its associated executor (never runs it inline), after
  // clearing its cancellation slot.
  virtual void complete(Args... args) = 0;
  // The handler's cancellation slot (unconnected when it has none).
  virtual boost::asio::cancellation_slot cancellation_slot() const noexcept = 0;
  // Where the handler will run: what is posted there before complete() runs before it.
  virtual boost::asio::any_io_executor executor() const = 0;
};

template <class Handler, class... Args>
struct completion_for final : completion<Args...> {
  using work_executor = boost::asio::associated_executor_t<Handler, boost::asio::any_io_executor>;
  completion_for(Handler&& h, const boost::asio::any_io_executor& ex)
      : handler(std::move(h)), work(boost::asio::get_associated_executor(handler, ex)) {}

  void complete(Args... args) override {
    auto slot = boost::asio::get_associated_cancellation_slot(handler);
    if (slot.is_connected())
      slot.clear();
    auto ex = work.get_executor();
    work.reset();
    boost::asio::post(ex, boost::asio::append(std::move(handler), std::move(args)...));
  }
  boost::asio::cancellation_slot cancellation_slot() const noexcept override {
    return boost::asio::get_associated_cancellation_slot(handler);
  }
  boost::asio::any_io_executor executor() const override { return work.get_executor(); }

  Handler handler;
  boost::asio::executor_work_guard<work_executor> work;
};

template <class... Args, class Handler>
std::unique_ptr<completion<Args...>> make_completion(Handler&& handler,
                                                     const boost::asio::any_io_executor& ex) {
  return std::make_unique<completion_for<std::decay_t<Handler>, Args...>>(
      std::forward<Handler>(handler), ex);
}

} // namespace childproc::detail
