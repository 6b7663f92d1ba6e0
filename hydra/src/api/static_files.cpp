#include "api/static_files.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

namespace hydra {

std::string content_type_for(const std::string& path) {
    static const std::map<std::string, std::string> kTypes = {{".html", "text/html; charset=utf-8"},
                                                              {".htm", "text/html; charset=utf-8"},
                                                              {".js", "text/javascript; charset=utf-8"},
                                                              {".css", "text/css; charset=utf-8"},
                                                              {".json", "application/json"},
                                                              {".txt", "text/plain; charset=utf-8"},
                                                              {".svg", "image/svg+xml"},
                                                              {".png", "image/png"},
                                                              {".ico", "image/x-icon"}};
    auto it = kTypes.find(std::filesystem::path(path).extension().string());
    return it == kTypes.end() ? "application/octet-stream" : it->second;
}

Handler static_files_handler(std::string directory) {
    return [directory = std::move(directory)](Context& ctx) -> Result {
        std::string rel = ctx.param("path");
        if (rel.empty()) rel = "index.html";
        // Segments only: no "..", no absolute paths, no hidden files.
        std::filesystem::path p(rel);
        for (const auto& part : p) {
            std::string s = part.string();
            if (s.empty() || s[0] == '.' || s.find('\0') != std::string::npos || p.is_absolute())
                throw Error(404, "no file " + rel);
        }
        std::filesystem::path file = std::filesystem::path(directory) / p;
        std::error_code ec;
        if (!std::filesystem::is_regular_file(file, ec)) throw Error(404, "no file " + rel);
        if (std::filesystem::file_size(file, ec) > (16u << 20)) throw Error(404, "no file " + rel);
        std::ifstream in(file, std::ios::binary);
        std::ostringstream content;
        content << in.rdbuf();
        ctx.set_response_header("Content-Type", content_type_for(file.string()));
        ctx.set_response_header("Cache-Control", "no-cache");
        return Result::binary(content.str());
    };
}

}  // namespace hydra
