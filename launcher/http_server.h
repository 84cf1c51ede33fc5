#pragma once
// A minimal HTTP/1.0 server for two read-only endpoints: the launcher's own /metrics and /sd
// (Prometheus HTTP service discovery). One thread, one request per connection, short timeouts:
// Prometheus is its only client. prometheus-cpp's exposer cannot serve a custom JSON document.
#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace aln::launcher {

struct HttpResponse {
  int code = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

class HttpServer {
 public:
  using Handler = std::function<HttpResponse(const std::string& path)>;
  // Binds host:port (port 0 picks one) and serves until destroyed.
  static absl::StatusOr<std::unique_ptr<HttpServer>> start(const std::string& address, Handler handler);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;
  int port() const { return port_; }
  const std::string& host() const { return host_; }

 private:
  HttpServer(int fd, std::string host, int port, Handler handler);
  void serve();
  void handle(int client) const;
  int fd_;
  std::string host_;
  int port_;
  Handler handler_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace aln::launcher
