// The one conversion of the library's std::error_code values to the boost::system::error_code of
// Asio completions (internal).
#pragma once

#include <boost/system/error_code.hpp>

#include <system_error>

namespace childproc::detail {

// An errno stays (errno, system_category()) and a childproc code stays in the "childproc"
// category, so that ec.value() == ENOENT and ec == std::errc::... hold in a completion.
boost::system::error_code to_asio_error(const std::error_code& ec) noexcept;

} // namespace childproc::detail
