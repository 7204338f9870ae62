// The gRPC service: validates requests, maps them onto jobs (jobs/registry.h), and maps errors
// onto grpc::Status in one place. Handlers answer from memory or with one bounded catalog query;
// the work is done on the jobs' threads and the host facts' refresher.
#pragma once

#include <memory>
#include <string>

#include "base/config.h"
#include "base/job.h"
#include "base/journal.h"
#include "daemon/host_facts.h"
#include "daemon/standby_agents.h"
#include "safe_upgrade/v1/agent.grpc.pb.h"

namespace safe_upgrade {

class AgentService final : public v1::Agent::CallbackService {
 public:
  // Callers are authorized before a call reaches the service: on the Unix socket by the listener
  // (peer credentials, per connection), on TCP by gRPC (TLS client certificates).
  AgentService(const AgentConfig& config, JobManager& jobs, Journal& journal, const HostFactsRefresher& facts,
               const StandbyAgentsWatcher& standbys, uint64_t system_identifier);

  grpc::ServerUnaryReactor* Ping(grpc::CallbackServerContext* ctx, const v1::PingRequest* req,
                                 v1::PingResponse* resp) override;
  grpc::ServerUnaryReactor* StartJob(grpc::CallbackServerContext* ctx, const v1::StartJobRequest* req,
                                     v1::JobRef* resp) override;
  grpc::ServerUnaryReactor* GetJob(grpc::CallbackServerContext* ctx, const v1::JobRef* req,
                                   v1::Job* resp) override;
  grpc::ServerUnaryReactor* GetUpgradeJournal(grpc::CallbackServerContext* ctx, const v1::UpgradeRef* req,
                                              v1::UpgradeJournal* resp) override;
  grpc::ServerUnaryReactor* GetInstalledVersions(grpc::CallbackServerContext* ctx, const v1::UpgradeRef* req,
                                                 v1::InstalledVersions* resp) override;
  grpc::ServerUnaryReactor* CheckStandbyFiles(grpc::CallbackServerContext* ctx, const v1::UpgradeRef* req,
                                              v1::StandbyFiles* resp) override;

 private:
  template <typename F>
  grpc::ServerUnaryReactor* Handle(grpc::CallbackServerContext* ctx, const char* rpc, F&& body);
  // StartJob of a standby agent's kind (kStandbyJobKinds).
  grpc::Status StartStandbyJob(JobKind kind, int64_t upgrade_id, v1::JobRef* resp);
  const AgentConfig& config_;
  JobManager& jobs_;
  Journal& journal_;
  const HostFactsRefresher& facts_;
  const StandbyAgentsWatcher& standbys_;
  uint64_t system_identifier_;
};

}  // namespace safe_upgrade
