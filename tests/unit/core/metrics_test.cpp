#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/metrics.h"

namespace aln {
namespace {

// A minimal HTTP GET over loopback (the real Prometheus server scrapes jobs in the e2e tests).
std::string http_get(int port, const std::string& path) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return "";
  }
  const std::string request = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  (void)!write(fd, request.data(), request.size());
  std::string response;
  char buffer[4096];
  ssize_t n;
  while ((n = read(fd, buffer, sizeof(buffer))) > 0) response.append(buffer, static_cast<size_t>(n));
  close(fd);
  return response;
}

TEST(Metrics, FamiliesAreRegisteredOnceAndSerialized) {
  MetricsRegistry registry(Labels{{"job", "unit"}});
  registry.gauge("aln_train_loss", "Training loss", {{"rank", "0"}, {"role", "policy"}}).Set(0.75);
  registry.counter("aln_train_steps_total", "Optimizer steps", {{"rank", "0"}}).Increment(3);
  // Asking again returns the same family and series.
  registry.counter("aln_train_steps_total", "Optimizer steps", {{"rank", "0"}}).Increment(2);
  const std::string text = registry.serialize();
  EXPECT_NE(text.find("aln_train_loss{job=\"unit\",rank=\"0\",role=\"policy\"} 0.75"), std::string::npos) << text;
  EXPECT_NE(text.find("aln_train_steps_total{job=\"unit\",rank=\"0\"} 5"), std::string::npos) << text;
  EXPECT_NE(text.find("# HELP aln_train_loss Training loss"), std::string::npos);
}

TEST(Metrics, ServerExposesRegistryOverHttp) {
  MetricsRegistry registry;
  registry.gauge("aln_up", "1 while the job runs").Set(1);
  auto server = MetricsServer::start("127.0.0.1", 0, registry);
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_GT((*server)->port(), 0);
  const std::string response = http_get((*server)->port(), "/metrics");
  EXPECT_NE(response.find("200 OK"), std::string::npos) << response;
  EXPECT_NE(response.find("aln_up 1"), std::string::npos) << response;
}

TEST(Metrics, PortInUseIsAClearError) {
  MetricsRegistry registry;
  auto first = MetricsServer::start("127.0.0.1", 0, registry);
  ASSERT_TRUE(first.ok());
  auto second = MetricsServer::start("127.0.0.1", (*first)->port(), registry);
  ASSERT_FALSE(second.ok());
  EXPECT_NE(second.status().message().find("choose another metrics.port"), std::string::npos) << second.status();
}

}  // namespace
}  // namespace aln
