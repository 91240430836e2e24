import AllotConfig
import AllotCore
import Foundation
import Testing

@testable import AllotSim

/// Services replaying their requests in the simulator: peak sizing against Knative's and allot's autoscalers.
@Suite struct ServiceSimulationTests {
    static let pool = """
        [[gpu_model]]
        name = "A100"
        memory_gib = 80
        price_per_hour = 1.8
        [[gpu_model]]
        name = "L4"
        memory_gib = 24
        price_per_hour = 0.8
        speed = 0.25
        [[node_group]]
        prefix = "a-"
        count = 4
        gpu_model = "A100"
        gpus = 8
        [[node_group]]
        prefix = "l-"
        count = 8
        gpu_model = "L4"
        gpus = 4
        """

    static let services = """
        [[service]]
        name = "chat"
        requests = "chat.csv"
        tenant = "product"
        slo = "2s"
        max = 40
        [[service.replica]]
        gpu_model = "L4"
        prefill_tokens_per_s = 4000
        decode_tokens_per_s = 25
        concurrency = 4
        cold_start = "30s"
        """

    /// A day in two hours: a quiet half hour at 0.5 requests/s, a 20-minute rise to 4/s, 20 minutes there, a
    /// 20-minute fall and a quiet half hour. Each request takes 4.25 s on a slot (1,000 prompt tokens at
    /// 4,000/s, 100 output tokens at 25/s): 2 to 17 erlangs.
    static func dailyRequests(seed: UInt64 = 7) -> RequestTrace {
        func rate(_ t: Double) -> Double {
            switch t {
            case ..<1800: 0.5
            case ..<3000: 0.5 + 3.5 * (t - 1800) / 1200
            case ..<4200: 4
            case ..<5400: 4 - 3.5 * (t - 4200) / 1200
            default: 0.5
            }
        }
        var rng = SplitMix(seed: seed)
        var out: [Request] = []
        var t = 0.0
        // Thinning: arrivals at the highest rate, each kept with the rate of its instant over it.
        while true {
            t += rng.exponential(mean: 0.25)
            if t >= 7200 { break }
            if rng.uniform() * 4 < rate(t) { out.append(Request(time: t, context: 1000, generated: 100)) }
        }
        return RequestTrace(requests: out)
    }

    static func run(
        _ scaling: ServiceScaling,
        trace: Trace = Trace(jobs: []),
        paranoid: Bool = false
    ) throws -> SimulationResult {
        let state = try ConfigFile.parse(pool).makeState()
        let file = try ServiceLoadFile.parse(services, models: state.config.gpuModels)
        var sim = Simulator()
        sim.paranoid = paranoid
        sim.services = ServiceWorkload(
            entries: [.init(service: file.services[0], trace: dailyRequests())],
            scaling: scaling
        )
        return try sim.run(trace, on: state)
    }

    @Test func peakSizingServesEveryRequestOnAFixedCount() throws {
        let r = try Self.run(.peak, paranoid: true)
        let s = try #require(r.services.first)
        #expect(s.requests == Self.dailyRequests().requests.count)
        #expect(s.fewestReplicas == s.mostReplicas, "\(s)")
        #expect(s.resizes == 0)
        #expect(s.sloShare >= 0.99, "\(s)")
        // The busiest hour is 17 erlangs on 4-slot replicas: at least five replicas.
        #expect(s.mostReplicas >= 5, "\(s)")
        // Every replica is stopped when the requests end; none is left holding GPUs.
        #expect(r.state.gpusInUse == 0)
        #expect(r.state.services.isEmpty)
    }

    @Test func allotsAutoscalerKeepsTheSLOOnFewerReplicaHoursThanPeak() throws {
        let peak = try #require(try Self.run(.peak).services.first)
        let allot = try #require(try Self.run(.allot).services.first)
        #expect(allot.sloShare >= 0.99, "\(allot)")
        #expect(allot.replicaHours < 0.75 * peak.replicaHours, "allot \(allot.replicaHours) peak \(peak.replicaHours)")
        #expect(allot.fewestReplicas < allot.mostReplicas)
        #expect(allot.resizes > 0)
    }

    @Test func knativesAutoscalerFollowsTheLoadToo() throws {
        let k = try #require(try Self.run(.knative).services.first)
        #expect(k.resizes > 0)
        #expect(k.fewestReplicas < k.mostReplicas, "\(k)")
        #expect(k.requests == Self.dailyRequests().requests.count)
    }

    /// The knative column runs the service's own `knative` setting when it has one (Knative's knobs tuned):
    /// a lower target than the default 70% of the 4 slots serves more requests in time on more replicas.
    @Test func knativesKnobsCanBeTunedPerService() throws {
        let models = try ConfigFile.parse(Self.pool).makeState().config.gpuModels
        let plain = try ServiceLoadFile.parse(Self.services, models: models).services[0]
        #expect(plain.knativeAutoscale == Autoscale(target: 2.8))
        let tuned = Self.services.replacingOccurrences(
            of: "max = 40\n",
            with: "max = 40\nknative = \"target=1.5,down-delay=10m\"\n"
        )
        let service = try ServiceLoadFile.parse(tuned, models: models).services[0]
        var expected = Autoscale(target: 1.5)
        expected.downDelay = 600
        #expect(service.knativeAutoscale == expected)
        let state = try ConfigFile.parse(Self.pool).makeState()
        func run(_ service: ServiceLoadFile.Service) throws -> ServiceFigures {
            var sim = Simulator()
            sim.services = ServiceWorkload(
                entries: [.init(service: service, trace: Self.dailyRequests())],
                scaling: .knative
            )
            return try #require(try sim.run(Trace(jobs: []), on: state).services.first)
        }
        let (d, t) = (try run(plain), try run(service))
        #expect(t.sloShare > d.sloShare && t.replicaHours > d.replicaHours, "default \(d), tuned \(t)")
        let slots = #expect(throws: ConfigError.self) {
            try ServiceLoadFile.parse(
                Self.services.replacingOccurrences(of: "max = 40\n", with: "max = 40\nknative = \"slots=4\"\n"),
                models: models
            )
        }
        #expect(
            slots?.description.contains("Knative sizes by a target per replica") == true,
            "\(String(describing: slots))"
        )
    }

    /// Replicas are not trace jobs: the training figures count only the trace's jobs, and training still runs
    /// on the GPUs the service does not use.
    @Test func trainingRunsBesideTheServiceAndItsFiguresLeaveReplicasOut() throws {
        let trace = try Trace.parse(
            "id,kind,tenant,submit_time,duration,gpus,gpu_model\na,training,research,0,3600,8,A100\nb,training,research,100,1800,8,A100\n"
        )
        let r = try Self.run(.allot, trace: trace)
        let s = r.summary()
        #expect(s.jobs == 2)
        #expect(s.completed == 2)
        #expect(r.endedJobs.allSatisfy { $0.spec.service == nil })
        #expect((r.services.first?.sloShare ?? 0) >= 0.99)
    }

    @Test func erlangSizingNeedsMoreHeadroomAtASmallLoadThanAtABigOne() {
        let a = Autoscale(slots: 8, waiting: 0.01)
        #expect(a.replicas(for: 0) == 0)
        #expect(a.replicas(for: 1) == 1)
        // 4 erlangs on 8 slots wait 5.9% of the time; on 16, far less.
        #expect(a.replicas(for: 4) == 2)
        let big = a.replicas(for: 400)
        #expect(big == 57, "\(big)")
        // 400 erlangs need 456 slots; a fixed target of 70% of 8 slots takes 72 replicas (576).
        #expect(Autoscale(target: 5.6).replicas(for: 400) == 72)
    }

    @Test func autoscaleParsesSlotsAndWaiting() throws {
        let a = try Autoscale.parse("slots=8,waiting=2%").get()
        #expect(a.slots == 8)
        #expect(a.waiting == 0.02)
        #expect(a.description.hasPrefix("slots=8,waiting=2%"))
        #expect(try Autoscale.parse(a.description).get() == a)
        #expect(try Autoscale.parse("slots=4,waiting=0.05").get().waiting == 0.05)
        func problem(_ text: String) -> String {
            if case .failure(let e) = Autoscale.parse(text) { return e.message }
            return ""
        }
        #expect(problem("target=4,slots=8").contains("not both"))
        #expect(problem("target=4,waiting=1%").contains("give slots=N"))
        #expect(problem("slots=0").contains("slots=0"))
        #expect(problem("slots=8,waiting=150%").contains("waiting=150%"))
    }

    @Test func azureTimestampsAndPlainSecondsBothRead() throws {
        let azure = try RequestTrace.parse(
            "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:50.9951690,396,109\n"
        )
        #expect(azure.requests.count == 2)
        #expect(abs(azure.requests[1].time - 4.314579) < 1e-6)
        #expect(azure.requests[0].time == 0)
        let plain = try RequestTrace.parse("time,context_tokens,generated_tokens\n5,10,20\n1.5,30,40\n")
        #expect(plain.requests.map(\.time) == [0, 3.5])
        #expect(plain.requests[0].context == 30)
    }

    @Test func badRequestRowsAndServiceFilesSayWhatIsWrong() throws {
        let e = #expect(throws: TraceError.self) {
            try RequestTrace.parse("time,context_tokens,generated_tokens\n1,10,20\nsoon,10,20\n", file: "r.csv")
        }
        #expect(e?.description.contains("r.csv:3: column time") == true, "\(String(describing: e))")
        let tokens = #expect(throws: TraceError.self) {
            try RequestTrace.parse("time,context_tokens,generated_tokens\n1,-3,20\n")
        }
        #expect(tokens?.description.contains("context_tokens") == true)
        let models = try ConfigFile.parse(Self.pool).makeState().config.gpuModels
        let unknownModel = #expect(throws: ConfigError.self) {
            try ServiceLoadFile.parse(Self.services.replacingOccurrences(of: "\"L4\"", with: "\"T4\""), models: models)
        }
        #expect(unknownModel?.description.contains("T4") == true, "\(String(describing: unknownModel))")
        #expect(
            unknownModel?.description.contains("service[0].replica[0].gpu_model") == true,
            "\(String(describing: unknownModel))"
        )
        let typo = #expect(throws: ConfigError.self) {
            try ServiceLoadFile.parse(Self.services + "\ncold_starts = \"1m\"\n", models: models)
        }
        #expect(typo?.description.contains("cold_starts") == true, "\(String(describing: typo))")
        let noReplica = #expect(throws: ConfigError.self) {
            try ServiceLoadFile.parse("[[service]]\nname = \"x\"\nrequests = \"x.csv\"\n", models: models)
        }
        #expect(noReplica?.description.contains("replica") == true)
    }
}
