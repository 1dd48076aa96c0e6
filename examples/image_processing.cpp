// Seed 004, "2. Image Processing Service": /process-image stores the upload, and a worker
// resizes it to 100, 300 and 800 px with libvips (the library under Node's sharp).
//
//   app.post('/process-image', upload.single('image'), (req, res) => {
//     const worker = fork('workers/image-processor.js');
//     worker.send({ task: 'resize-and-optimize', imagePath, sizes: [100, 300, 800] });
//     worker.on('message', (result) => {
//       res.json({ original: imagePath, processed: result.outputPaths });
//       worker.kill();
//     });
//   });
//   // workers/image-processor.js
//   for (const size of msg.sizes)
//     await sharp(msg.imagePath).resize(size, size).jpeg({ quality: 80 }).toFile(outputPath);
//
// The upload is the request's body (a JPEG; multer's multipart form is left out), written to
// <folder>/uploads. sharp's resize(size, size) covers the square and crops the centre: vips's
// thumbnail with crop does the same. The client checks each output's size by reading it back.
#include "fork_task.hpp"
#include "http/router.hpp"

#include <fmt/core.h>
#include <vips/vips8>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string_view>

namespace hr = http_router;
namespace fs = std::filesystem;
using hr::json::value;

namespace {

// workers/image-processor.js
value resize_and_optimize(const fs::path& folder, const value& msg) {
  hr::json::array outputs;
  const std::string input(msg.at("imagePath").as_string());
  for (const auto& size : msg.at("sizes").as_array()) {
    const int px = size.to_number<int>();
    const auto output = (folder / "processed" / fmt::format("{}_{}.jpg", px, ::getpid())).string();
    vips::VImage::thumbnail(
        input.c_str(), px,
        vips::VImage::option()->set("height", px)->set("crop", VIPS_INTERESTING_CENTRE))
        .jpegsave(output.c_str(), vips::VImage::option()->set("Q", 80));
    outputs.push_back(value(output));
  }
  return {{"outputPaths", outputs}};
}

// A 1200 x 900 gradient as a JPEG, the client's upload.
std::string test_image() {
  auto image = (vips::VImage::xyz(1200, 900)[0] * (255.0 / 1200)).cast(VIPS_FORMAT_UCHAR);
  void* data = nullptr;
  size_t size = 0;
  image.bandjoin({image, image}).write_to_buffer(".jpg", &data, &size);
  std::string bytes(static_cast<const char*>(data), size);
  g_free(data);
  return bytes;
}

} // namespace

int main(int argc, char** argv) {
  if (VIPS_INIT(argv[0]) != 0)
    return 1;
  if (argc > 2 && std::string_view(argv[1]) == "image-processor")
    return fork_task::serve_tasks(
        [&](const value& msg) { return resize_and_optimize(argv[2], msg); });

  char folder_template[] = "/tmp/image_processing.XXXXXX";
  const fs::path folder = ::mkdtemp(folder_template);
  fs::create_directories(folder / "uploads");
  fs::create_directories(folder / "processed");

  boost::asio::io_context io;
  int uploads = 0;
  auto app = std::make_shared<hr::router>();
  app->post("/process-image", [&](hr::context& c) -> hr::awaitable<void> {
    const auto image_path = (folder / "uploads" / fmt::format("upload-{}", ++uploads)).string();
    std::ofstream(image_path, std::ios::binary) << c.req.body();
    const value task{
        {"task", "resize-and-optimize"}, {"imagePath", image_path}, {"sizes", {100, 300, 800}}};
    // Named before the co_await: g++ 12 mishandles temporaries inside a co_await expression.
    const std::vector<std::string> args{"image-processor", folder.string()};
    const auto done = co_await fork_task::run(childproc::self_exe(), args, task);
    if (!done.reply)
      hr::send_json(c, {{"error", "the worker failed"}}, hr::http::status::internal_server_error);
    else
      hr::send_json(c, {{"original", image_path}, {"processed", done.reply->at("outputPaths")}});
  });

  hr::run_with_client(io, app, [&](hr::tcp::endpoint at) -> hr::awaitable<void> {
    const auto upload = test_image();
    fmt::print("upload: a 1200x900 JPEG of {} bytes\n", upload.size());
    const std::vector<std::pair<std::string, std::string>> headers{{"Content-Type", "image/jpeg"}};
    const auto res =
        co_await hr::fetch(at, hr::http::verb::post, "/process-image", upload, headers);
    fmt::print("POST /process-image -> {}\n", res.result_int());
    const auto reply = hr::json::parse(res.body());
    for (const auto& path : reply.at("processed").as_array()) {
      const auto image = vips::VImage::new_from_file(path.as_string().c_str());
      const auto name = fs::path(path.as_string().c_str()).filename().string(); // <size>_<pid>.jpg
      fmt::print("processed/{}_<pid>.jpg: {}x{}\n", name.substr(0, name.find('_')), image.width(),
                 image.height());
    }
  });
  fs::remove_all(folder);
  vips_shutdown();
}
