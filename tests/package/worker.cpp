// A pool worker built by the installed package's childproc_add_worker(): "sum" adds {a, b}.
#include <childproc/serve.hpp>

#include <boost/asio/io_context.hpp>

int main() {
  boost::asio::io_context io;
  return childproc::serve(io, childproc::task_table{{"sum", [](const childproc::message& m) {
                                                       return childproc::message(
                                                           m.json().at("a").to_number<int>() +
                                                           m.json().at("b").to_number<int>());
                                                     }}});
}
