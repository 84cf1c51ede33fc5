// LibTorch and Debian's gRPC/protobuf/abseil in one process: a gRPC server and client over
// loopback exchange a JobSpec (our protobuf), and the handler computes with LibTorch. If symbols
// of the two stacks clashed (for example a protobuf copy inside LibTorch registering the same
// descriptors), this would crash or fail at start-up.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <grpcpp/grpcpp.h>

#include "aln/v1/launcher.grpc.pb.h"
#include "core/config/job_config.h"
#include "kernels/token_logprobs.h"

namespace {

class TorchJobService final : public aln::v1::JobService::Service {
 public:
  grpc::Status SubmitJob(grpc::ServerContext*, const aln::v1::SubmitJobRequest* request,
                         aln::v1::SubmitJobResponse* response) override {
    auto loaded = aln::config::load_job_text(request->spec_yaml(), "submitted.yaml");
    if (!loaded.ok()) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, std::string(loaded.status().message()));
    // Use LibTorch inside the RPC handler: log-prob of token 0 under uniform logits = -log(vocab).
    const int64_t vocab = loaded->spec.model().config().vocab_size();
    at::Tensor lp = aln::kernels::token_logprobs(at::zeros({1, vocab}), at::zeros({1}, at::kLong));
    response->set_job_id(loaded->spec.name() + ":" + std::to_string(lp.item<float>()));
    return grpc::Status::OK;
  }
};

TEST(GrpcTorchCoexist, RpcHandlerUsesLibTorchAndOurProtos) {
  TorchJobService service;
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  ASSERT_GT(port, 0);

  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials());
  auto stub = aln::v1::JobService::NewStub(channel);

  aln::v1::SubmitJobRequest request;
  request.set_spec_yaml("name: coexist\nmodel: {config: {vocab_size: 4}}\ntrainer: {sft: {}}\ndata: {train: [{path: a}]}\n");
  aln::v1::SubmitJobResponse response;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  grpc::Status status = stub->SubmitJob(&context, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.job_id(), "coexist:" + std::to_string(-std::log(4.0f)));

  request.set_spec_yaml("name: bad\ntrainer: {dpo: {beta: -1}}\n");
  grpc::ClientContext context2;
  context2.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  status = stub->SubmitJob(&context2, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message(), "submitted.yaml:2: trainer.dpo.beta: out of range: -1 must be greater than 0");
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
}

}  // namespace
