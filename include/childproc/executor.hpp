// What the library's functions accept as "where to run": an Asio executor or execution context.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/execution.hpp>
#include <boost/asio/execution_context.hpp>

#include <type_traits>

namespace childproc {
inline namespace v1 {

/// An executor, or an execution context such as asio::io_context.
template <class T>
concept executor_or_context = std::is_convertible_v<T&, boost::asio::execution_context&> ||
    boost::asio::execution::executor<T>;

} // namespace v1

namespace detail {
template <class T>
boost::asio::any_io_executor executor_of(T& target) {
  if constexpr (std::is_convertible_v<T&, boost::asio::execution_context&>)
    return target.get_executor();
  else
    return boost::asio::any_io_executor(target);
}
} // namespace detail
} // namespace childproc
