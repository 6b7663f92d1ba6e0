// A small blocking HTTP client for tests (Poco HTTPClientSession), one request per call.
#pragma once

#include <map>
#include <string>

#include <Poco/Net/HTTPClientSession.h>
#include <Poco/Net/HTTPRequest.h>
#include <Poco/Net/HTTPResponse.h>
#include <Poco/Net/SocketAddress.h>
#include <Poco/StreamCopier.h>

#include <hydra/json.h>

namespace test {

struct HttpReply {
    int status = 0;
    std::map<std::string, std::string> headers;
    std::string body;
    hydra::Json json() const { return hydra::Json::parse(body); }
};

inline HttpReply http_on(Poco::Net::HTTPClientSession& session, const std::string& method, const std::string& path,
                         const std::string& body = {}, const std::string& content_type = "application/json",
                         const std::map<std::string, std::string>& headers = {}) {
    Poco::Net::HTTPRequest req(method, path, Poco::Net::HTTPMessage::HTTP_1_1);
    for (const auto& [k, v] : headers) req.set(k, v);
    if (!body.empty() || method == "POST" || method == "PUT") {
        req.setContentType(content_type);
        req.setContentLength64(static_cast<std::int64_t>(body.size()));
    }
    session.sendRequest(req) << body;
    Poco::Net::HTTPResponse resp;
    std::istream& in = session.receiveResponse(resp);
    HttpReply r;
    r.status = resp.getStatus();
    for (const auto& [k, v] : resp) r.headers[k] = v;
    Poco::StreamCopier::copyToString(in, r.body);
    return r;
}

inline HttpReply http(const std::string& address, const std::string& method, const std::string& path,
                      const std::string& body = {}, const std::string& content_type = "application/json",
                      const std::map<std::string, std::string>& headers = {}) {
    Poco::Net::HTTPClientSession session{Poco::Net::SocketAddress(address)};
    session.setTimeout(Poco::Timespan(10, 0));
    return http_on(session, method, path, body, content_type, headers);
}

}  // namespace test
