#pragma once
// A minimal HTTP/1.0 server for the launcher's read-only endpoints: its own /metrics, /sd
// (Prometheus HTTP service discovery) and /healthz. prometheus-cpp's exposer cannot serve a custom
// JSON document. One request per connection; each connection has a thread of its own and one
// deadline for the whole exchange, so a client that trickles bytes cannot hold up the others
// (a /healthz probe in particular); past kMaxConnections new connections are closed at once.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
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
  static constexpr int kMaxConnections = 64;
  // Reading the request head and writing the answer, together.
  static constexpr std::chrono::milliseconds kDeadline{3000};

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
  // Runs handle() on a thread of its own, counted in active_.
  void dispatch(int client);
  int fd_;
  std::string host_;
  int port_;
  Handler handler_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::condition_variable idle_;
  int active_ = 0;  // connection threads still running
  std::thread thread_;
};

}  // namespace aln::launcher
