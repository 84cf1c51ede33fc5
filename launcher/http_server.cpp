#include "launcher/http_server.h"

#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace aln::launcher {

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::start(const std::string& address, Handler handler) {
  const size_t colon = address.rfind(':');
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("--http-listen: '", address, "' is not HOST:PORT"));
  }
  const std::string host = address.substr(0, colon);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* found = nullptr;
  if (int rc = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found); rc != 0) {
    return absl::InvalidArgumentError(absl::StrCat("--http-listen: ", host, ": ", gai_strerror(rc)));
  }
  int fd = ::socket(found->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (fd < 0 || ::bind(fd, found->ai_addr, found->ai_addrlen) != 0 || ::listen(fd, 64) != 0) {
    const std::string why = std::strerror(errno);
    freeaddrinfo(found);
    if (fd >= 0) ::close(fd);
    return absl::UnavailableError(
        absl::StrCat("--http-listen: cannot listen on ", address, ": ", why, "; pick another port"));
  }
  freeaddrinfo(found);
  sockaddr_storage bound{};
  socklen_t len = sizeof bound;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len);
  port = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                           : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  return std::unique_ptr<HttpServer>(new HttpServer(fd, host, port, std::move(handler)));
}

HttpServer::HttpServer(int fd, std::string host, int port, Handler handler)
    : fd_(fd), host_(std::move(host)), port_(port), handler_(std::move(handler)) {
  thread_ = std::thread([this] { serve(); });
}

HttpServer::~HttpServer() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
  ::close(fd_);
  // Connection threads end by their deadline at the latest.
  std::unique_lock<std::mutex> lock(mu_);
  idle_.wait(lock, [this] { return active_ == 0; });
}

void HttpServer::serve() {
  while (!stop_) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, 100) != 1) continue;  // wakes up to see stop_
    const int client = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) continue;
    dispatch(client);
  }
}

void HttpServer::dispatch(int client) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (active_ >= kMaxConnections) {
      ::close(client);  // shed load: the others keep their deadlines
      return;
    }
    ++active_;
  }
  std::thread([this, client] {
    handle(client);
    ::close(client);
    std::lock_guard<std::mutex> lock(mu_);
    if (--active_ == 0) idle_.notify_all();
  }).detach();
}

void HttpServer::handle(int client) const {
  const auto deadline = std::chrono::steady_clock::now() + kDeadline;
  // Milliseconds left before the deadline, for poll (0 once it has passed).
  auto left_ms = [&] {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    return static_cast<int>(std::max<int64_t>(0, left.count()));
  };
  std::string request;
  char buffer[4096];
  // Read the request head, 16 KiB at most, within the deadline however the bytes trickle in.
  while (request.find("\r\n\r\n") == std::string::npos && request.size() < 16384) {
    pollfd p{client, POLLIN, 0};
    if (::poll(&p, 1, left_ms()) != 1) return;
    const ssize_t n = ::read(client, buffer, sizeof buffer);
    if (n <= 0) return;
    request.append(buffer, static_cast<size_t>(n));
  }
  HttpResponse response;
  const size_t sp1 = request.find(' ');
  const size_t sp2 = sp1 == std::string::npos ? std::string::npos : request.find(' ', sp1 + 1);
  if (sp2 == std::string::npos || request.compare(0, sp1, "GET") != 0) {
    response = {405, "text/plain", "only GET is served\n"};
  } else {
    std::string path = request.substr(sp1 + 1, sp2 - sp1 - 1);
    if (const size_t q = path.find('?'); q != std::string::npos) path.resize(q);
    response = handler_(path);
  }
  const char* reason = response.code == 200 ? "OK" : response.code == 404 ? "Not Found" : "Error";
  std::string out =
      absl::StrCat("HTTP/1.0 ", response.code, " ", reason, "\r\nContent-Type: ", response.content_type,
                   "\r\nContent-Length: ", response.body.size(), "\r\nConnection: close\r\n\r\n", response.body);
  size_t sent = 0;
  while (sent < out.size()) {
    pollfd p{client, POLLOUT, 0};
    if (::poll(&p, 1, left_ms()) != 1) return;
    const ssize_t n = ::send(client, out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return;
    sent += static_cast<size_t>(n);
  }
}

}  // namespace aln::launcher
