// A handler serving the files of one directory (the API server's static file route).
#pragma once

#include <string>

#include <hydra/handler.h>

namespace hydra {

// Serves ctx.params()["path"] below `directory`; "" → index.html. 404 for anything missing or outside it.
Handler static_files_handler(std::string directory);

// Content type by file extension (text/html for .html, ...); application/octet-stream otherwise.
std::string content_type_for(const std::string& path);

}  // namespace hydra
