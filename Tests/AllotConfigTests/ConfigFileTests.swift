import AllotCore
import Foundation
import Testing

@testable import AllotConfig

@Suite struct ConfigFileTests {
    static let minimal = """
        [[gpu_model]]
        name = "A100"
        memory_gib = 80
        price_per_hour = 2.0

        [[node]]
        name = "a1"
        gpu_model = "A100"
        gpus = 8
        """

    /// The example config shipped in etc/, found from this file's path.
    static var examplePath: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("etc/allot/allotd.toml").path
    }

    @Test func theShippedExampleLoads() throws {
        let c = try ConfigFile.load(path: Self.examplePath)
        #expect(c.pool.gpuModels.map(\.name) == ["H100-80GB", "A100-80GB", "L4"])
        #expect(c.nodes.count == 4 + 4 + 8)
        #expect(c.nodes.map(\.name).prefix(4) == ["h100-01", "h100-02", "h100-03", "h100-04"])
        #expect(c.nodes.first?.nvlinkIslands == [[0, 1, 2, 3], [4, 5, 6, 7]])
        #expect(c.nodes.first?.labels == ["rack": "r1"])
        #expect(
            c.pool.tenants.first { $0.name == "research" }?.budget
                == Budget(usd: 20_000, window: .month, enforcement: .hard)
        )
        #expect(c.pool.scheduler.fairshareHalfLife == 7 * 86_400)
        let state = try c.makeState()
        #expect(state.totalGPUs == 96)
    }

    /// `[ha]`: several controllers on etcd; bad values are named with their key.
    @Test func haSectionIsReadAndBadValuesNamed() throws {
        let c = try ConfigFile.parse(
            Self.minimal
                + "\n[ha]\netcd = [\"http://127.0.0.1:2379\", \"https://e2:2379\"]\ncluster = \"gpu-pool\"\nlease_ttl = \"3s\"\n"
        )
        #expect(c.ha?.etcd.count == 2 && c.ha?.cluster == "gpu-pool" && c.ha?.leaseTTL == 3 && c.ha?.name == nil)
        #expect(try ConfigFile.parse(Self.minimal).ha == nil)
        for (bad, key, words) in [
            ("etcd = []", "etcd", "give etcd's client URLs"),
            ("etcd = [\"10.0.0.1:2379\"]", "etcd", "is not a URL"),
            ("etcd = [\"http://e:2379\"]\ncluster = \"a/b\"", "cluster", "letters, digits"),
            ("etcd = [\"http://e:2379\"]\nlease_ttl = \"1s\"", "lease_ttl", "at least 2s"),
            ("etcd = [\"http://e:2379\"]\ncertificate = \"c.pem\"", "key", "go together"),
            ("etcd = [\"http://e:2379\"]\nleader = \"x\"", "leader", "unknown key"),
        ] {
            let e = #expect(throws: ConfigError.self) { try ConfigFile.parse(Self.minimal + "\n[ha]\n" + bad + "\n") }
            #expect(
                e?.description.contains("ha.\(key)") == true && e?.description.contains(words) == true,
                "\(String(describing: e))"
            )
        }
    }

    /// Attained-service queues are read in GPU-hours; bad thresholds are named.
    @Test func serviceQueuesAreReadAndBadOnesNamed() throws {
        let c = try ConfigFile.parse(
            "[scheduler]\nservice_queues = [1, 2.5, 64]\nstarvation_factor = 3\nstarvation_minimum = \"10m\"\n"
                + Self.minimal
        )
        #expect(c.pool.scheduler.serviceQueues == [3600, 9000, 64 * 3600])
        #expect(c.pool.scheduler.starvationFactor == 3 && c.pool.scheduler.starvationMinimum == 600)
        #expect(
            try ConfigFile.parse("[scheduler]\nservice_queues = []\n" + Self.minimal).pool.scheduler.serviceQueues == []
        )
        for (bad, words) in [
            ("service_queues = [16, 4]", "4 does not come after 16"),
            ("service_queues = [0]", "element 0 must be a positive number"),
            ("service_queues = 16", "expected an array of positive numbers"),
            ("starvation_factor = -1", "starvation_factor"),
        ] {
            let e = #expect(throws: ConfigError.self) {
                try ConfigFile.parse("[scheduler]\n" + bad + "\n" + Self.minimal)
            }
            #expect(e?.description.contains(words) == true, "\(String(describing: e))")
        }
    }

    @Test func loansAreAskedToCheckpointAsTheConfigSays() throws {
        #expect(try ConfigFile.parse(Self.minimal).pool.preemption.loanCheckpointEvery == 600)
        let c = try ConfigFile.parse("[preemption]\nloan_checkpoint_every = \"15m\"\n" + Self.minimal)
        #expect(c.pool.preemption.loanCheckpointEvery == 900)
        #expect(
            try ConfigFile.parse("[preemption]\nloan_checkpoint_every = \"0s\"\n" + Self.minimal).pool.preemption
                .loanCheckpointEvery == 0
        )
        let e = #expect(throws: ConfigError.self) {
            try ConfigFile.parse("[preemption]\nloan_checkpoint_every = \"often\"\n" + Self.minimal)
        }
        #expect(e?.description.contains("loan_checkpoint_every") == true, "\(String(describing: e))")
    }

    @Test func minimalConfigGetsDefaults() throws {
        let c = try ConfigFile.parse(Self.minimal)
        #expect(c.pool.priorityClasses == PriorityClass.defaults)
        #expect(c.pool.gpuModels[0].speed == 1.0)
        #expect(c.pool.scheduler == SchedulerSettings())
    }

    @Test func migModesLayoutsAndProfileTablesAreReadAndBadOnesNamed() throws {
        func error(_ text: String) -> String {
            do {
                _ = try ConfigFile.parse(text)
                return "accepted"
            } catch { return "\(error)" }
        }
        // An A100 with 80 GiB gets NVIDIA's table; a static layout is checked against it.
        let c = try ConfigFile.parse(Self.minimal + "\nmig = \"static\"\nmig_layout = [\"3g.40gb@0\", \"3g.40gb@4\"]\n")
        #expect(c.pool.gpuModels[0].mig?.profiles.first?.name == "1g.10gb")
        #expect(c.nodes[0].mig == .static && c.nodes[0].migLayout.map(\.description) == ["3g.40gb@0", "3g.40gb@4"])
        #expect(try ConfigFile.parse(Self.minimal + "\nmig = \"dynamic\"\n").nodes[0].mig == .dynamic)
        #expect(error(Self.minimal + "\nmig = \"static\"\n").contains("needs the layout"))
        #expect(
            error(Self.minimal + "\nmig = \"static\"\nmig_layout = [\"3g.40gb@2\"]\n").contains(
                "may start at 0, 4, not 2"
            )
        )
        #expect(
            error(Self.minimal + "\nmig = \"static\"\nmig_layout = [\"4g.40gb@0\", \"3g.40gb@0\"]\n").contains(
                "overlaps 4g.40gb@0"
            )
        )
        #expect(
            error(Self.minimal + "\nmig = \"static\"\nmig_layout = [\"9g.1gb@0\"]\n").contains(
                "no MIG profile \"9g.1gb\""
            )
        )
        #expect(error(Self.minimal + "\nmig_layout = [\"3g.40gb@0\"]\n").contains("needs mig = \"static\""))
        // A model allot does not know has no table unless the config gives one.
        let l4 = Self.minimal.replacingOccurrences(of: "A100", with: "L4")
        #expect(error(l4 + "\nmig = \"dynamic\"\n").contains("has no MIG profiles"))
        let own = l4.replacingOccurrences(
            of: "price_per_hour = 2.0",
            with: """
                price_per_hour = 2.0
                [[gpu_model.mig_profile]]
                name = "half"
                compute = 3
                memory_slices = 4
                memory_gib = 12
                starts = [0, 4]
                """
        )
        let mine = try ConfigFile.parse(own + "\nmig = \"dynamic\"\n")
        #expect(
            mine.pool.gpuModels[0].mig?.profiles == [
                MIGProfile(name: "half", compute: 3, memorySlices: 4, memoryGiB: 12, starts: [0, 4])
            ]
        )
        #expect(
            error(own.replacingOccurrences(of: "starts = [0, 4]", with: "starts = [6]")).contains(
                "start 6 does not fit"
            )
        )
        // allotd makes instances through NVML on the nodes it runs itself, and says so for the others.
        #expect(mine.allotdRefusal(path: "x.toml", hostname: "a1")?.message.contains("add discover = \"nvml\"") == true)
        #expect(mine.allotdRefusal(path: "x.toml", hostname: "h")?.message.contains("or from a node agent") == true)
        let found = try ConfigFile.parse(own + "\nmig = \"dynamic\"\ndiscover = \"nvml\"\n")
        #expect(found.allotdRefusal(path: nil, hostname: "h")?.message.contains("run it from allotd") == true)
        #expect(found.allotdRefusal(path: nil, hostname: "a1") == nil)
        #expect(try ConfigFile.parse(Self.minimal).allotdRefusal(path: nil, hostname: "h") == nil)
    }

    @Test func nodesSaySharingModeAndBadOnesAreNamed() throws {
        let c = try ConfigFile.parse(Self.minimal + "\nsharing = \"mps\"\n")
        #expect(c.nodes[0].sharing == .mps)
        #expect(try ConfigFile.parse(Self.minimal).nodes[0].sharing == .timeSlice)
        #expect(throws: ConfigError.self) { try ConfigFile.parse(Self.minimal + "\nsharing = \"hami\"\n") }
        do {
            _ = try ConfigFile.parse(Self.minimal + "\nsharing = \"hami\"\n")
        } catch {
            #expect(
                "\(error)".contains("sharing") && "\(error)".contains("\"time-slice\", \"mps\", \"off\""),
                "\(error)"
            )
        }
    }

    @Test func nodeGroupsExpandWithPaddedNumbers() throws {
        let c = try ConfigFile.parse(
            Self.minimal + """

                [[node_group]]
                prefix = "gpu-"
                count = 3
                start = 9
                digits = 3
                gpu_model = "A100"
                gpus = 4
                """
        )
        #expect(c.nodes.map(\.name) == ["a1", "gpu-009", "gpu-010", "gpu-011"])
        #expect(c.nodes.last?.gpus == 4)
    }

    @Test func durationsTakeTextOrSeconds() throws {
        let c = try ConfigFile.parse("[scheduler]\nfairshare_half_life = \"36h\"\ndefault_grace = 45\n" + Self.minimal)
        #expect(c.pool.scheduler.fairshareHalfLife == 36 * 3600)
        #expect(c.pool.scheduler.defaultGrace == 45)
    }

    struct Bad: CustomTestStringConvertible, Sendable {
        var text: String
        var line: Int?
        var key: String
        var says: String
        var testDescription: String { key }
    }

    static let bad: [Bad] = [
        Bad(
            text: minimal.replacingOccurrences(of: "gpus = 8", with: "gpus = \"eight\""),
            line: 9,
            key: "node[0].gpus",
            says: "expected an integer from 1 to 64, got \"eight\""
        ),
        Bad(
            text: minimal.replacingOccurrences(of: "gpus = 8", with: "gpus = 65"),
            line: 9,
            key: "node[0].gpus",
            says: "expected an integer from 1 to 64, got 65"
        ),
        Bad(
            text: minimal.replacingOccurrences(of: "gpu_model = \"A100\"", with: "gpu_model = \"A10O\""),
            line: 8,
            key: "node[0].gpu_model",
            says: "GPU model \"A10O\" is not declared; did you mean \"A100\"?"
        ),
        Bad(
            text: minimal.replacingOccurrences(of: "price_per_hour = 2.0", with: "price_per_hour = -1"),
            line: 4,
            key: "gpu_model[0].price_per_hour",
            says: "expected a number of at least 0, got -1"
        ),
        Bad(
            text: minimal.replacingOccurrences(of: "memory_gib = 80", with: "memroy_gib = 80"),
            line: 3,
            key: "gpu_model[0].memroy_gib",
            says: "unknown key; did you mean \"memory_gib\"? (memory_gib is required: a number greater than 0)"
        ),
        // A misspelt top-level table is reported first, not as what its absence breaks.
        Bad(
            text: minimal.replacingOccurrences(of: "[[node]]", with: "[[nodegroup]]"),
            line: 6,
            key: "nodegroup",
            says: "unknown key; did you mean \"node_group\"?"
        ),
        Bad(
            text: minimal + "\nnvlink_islands = [[0, 1], [1, 2]]",
            line: 10,
            key: "node[0].nvlink_islands",
            says: "GPU 1 is in two NVLink islands"
        ),
        Bad(text: minimal + "\ncolour = \"blue\"", line: 10, key: "node[0].colour", says: "unknown key"),
        Bad(
            text: "[scheduler]\nfairshare_half_life = \"a week\"\n" + minimal,
            line: 2,
            key: "scheduler.fairshare_half_life",
            says: "expected a duration such as"
        ),
        Bad(
            text: "[scheduler]\ndefault_training_class = \"gold\"\n" + minimal,
            line: 2,
            key: "scheduler.default_training_class",
            says: "priority class \"gold\" is not declared"
        ),
        Bad(
            text: minimal + "\n[[node]]\nname = \"a1\"\ngpu_model = \"A100\"\ngpus = 2\n",
            line: 10,
            key: "node[1]",
            says: "node \"a1\" is already declared by node[0]"
        ),
        Bad(
            text: "[[node]]\nname = \"x\"\ngpu_model = \"A\"\ngpus = 1\n",
            line: nil,
            key: "gpu_model",
            says: "no [[gpu_model]] is declared"
        ),
        Bad(
            text: minimal + "\n[[tenant]]\nname = \"r\"\nbudget = { usd = 10, window = \"year\" }\n",
            line: 12,
            key: "tenant[0].budget.window",
            says: "expected one of \"day\", \"week\", \"month\", got \"year\""
        ),
        Bad(text: minimal + "\n[daemonn]\n", line: 10, key: "daemonn", says: "unknown key"),
        Bad(
            text: minimal + "\n[cluster]\nlisten = \"7450\"\n",
            line: 11,
            key: "cluster.listen",
            says: "expected host:port"
        ),
        Bad(
            text: minimal
                + "\n[cluster]\nlisten = \"0.0.0.0:7450\"\nheartbeat_interval = \"5s\"\nnode_timeout = \"6s\"\n",
            line: 13,
            key: "cluster.node_timeout",
            says: "at least twice heartbeat_interval"
        ),
        Bad(
            text: minimal + "\n[cluster]\nlisten = \"0.0.0.0:7450\"\non_node_loss = \"panic\"\n",
            line: 12,
            key: "cluster.on_node_loss",
            says: "expected one of \"requeue-preemptible\", \"requeue\", \"fail\""
        ),
        Bad(
            text: minimal + "\ndiscover = \"cuda\"\n",
            line: 10,
            key: "node[0].discover",
            says: "expected one of \"nvml\", \"nvidia-smi\""
        ),
        Bad(
            text: minimal + "\n[daemon]\nstop_signal = \"SIGKILL\"\n",
            line: 11,
            key: "daemon.stop_signal",
            says: "expected one of \"SIGTERM\""
        ),
        Bad(
            text: minimal + "\n[daemon]\non_gpu_failure = \"ignore\"\n",
            line: 11,
            key: "daemon.on_gpu_failure",
            says: "expected one of \"requeue\", \"fail\""
        ),
    ]

    @Test func clusterDiscoveryAndGPUSettingsAreRead() throws {
        let text = """
            [[gpu_model]]
            name = "H100"
            memory_gib = 80
            price_per_hour = 3.0

            [[node]]
            name = "g1"
            gpu_model = "H100"
            discover = "nvml"

            [daemon]
            gpu_check_interval = "30s"
            on_gpu_failure = "fail"
            stop_signal = "SIGUSR1"
            nvml_library = "/opt/nvidia/libnvidia-ml.so.1"

            [cluster]
            listen = "[::]:7450"
            heartbeat_interval = "1s"
            node_timeout = "5s"
            on_node_loss = "fail"
            """
        let c = try ConfigFile.parse(text)
        #expect(c.discovery["g1"] == .nvml)
        #expect(c.nodes[0].gpus == 1, "a discovered node without gpus starts with one, until discovery")
        #expect(c.daemon.gpuCheckInterval == 30)
        #expect(c.daemon.onGPUFailure == .fail)
        #expect(c.daemon.stopSignal.number == 10)
        #expect(c.daemon.nvmlLibrary == "/opt/nvidia/libnvidia-ml.so.1")
        #expect(c.cluster?.listen == "[::]:7450")
        #expect(c.cluster?.nodeTimeout == 5)
        #expect(c.cluster?.onNodeLoss == .fail)
        #expect(c.cluster?.ca == "/etc/allot/pki/ca.crt")
    }

    @Test(arguments: bad)
    func badConfigNamesTheKeyTheLineAndWhatWasExpected(_ bad: Bad) {
        do {
            _ = try ConfigFile.parse(bad.text, file: "allotd.toml")
            Issue.record("accepted a bad config")
        } catch {
            #expect(error.key == bad.key)
            #expect(error.line == bad.line, "\(error)")
            #expect(error.message.contains(bad.says), "\(error)")
            #expect(error.description.hasPrefix("allotd.toml"))
        }
    }

    @Test func invalidTOMLReportsItsLine() {
        do {
            _ = try ConfigFile.parse("[[gpu_model]]\nname = \"A100\nmemory_gib = 80\n", file: "x.toml")
            Issue.record("accepted invalid TOML")
        } catch {
            #expect(error.line == 2)
            #expect(error.message.hasPrefix("not valid TOML"))
        }
    }

    @Test func missingFileSaysSo() {
        do {
            _ = try ConfigFile.load(path: "/nonexistent/allotd.toml")
            Issue.record("loaded a missing file")
        } catch {
            #expect(error.file == "/nonexistent/allotd.toml")
            #expect(error.message.hasPrefix("cannot read the file"))
        }
    }

    @Test func accountsSayWhoMayChargeWhichTenant() throws {
        let c = try ConfigFile.parse(
            Self.minimal + """

                [[tenant]]
                name = "research"
                users = ["alice"]
                groups = ["ml"]

                [[tenant]]
                name = "ops"

                [[tenant]]
                name = "carol"
                users = ["dave"]

                [accounts]
                default_tenant = "shared"
                user_defaults = { alice = "research" }
                """
        )
        let a = c.accounts
        #expect(a.defaultTenant(for: "alice") == "research")
        #expect(a.defaultTenant(for: "bob") == "shared")
        #expect(a.refusal(user: "alice", groups: [], admin: false, tenant: "research") == nil)
        #expect(a.refusal(user: "bob", groups: ["ml"], admin: false, tenant: "research") == nil)
        #expect(a.refusal(user: "bob", groups: [], admin: false, tenant: "shared") == nil)
        #expect(a.refusal(user: "bob", groups: [], admin: false, tenant: "bob") == nil)
        #expect(a.refusal(user: "root", groups: [], admin: true, tenant: "ops") == nil)
        let bob = try #require(a.refusal(user: "bob", groups: [], admin: false, tenant: "research"))
        #expect(bob.contains("users alice and groups ml") && bob.hasSuffix("bob may use bob, shared"), "\(bob)")
        #expect(a.refusal(user: "bob", groups: [], admin: false, tenant: "ops")?.contains("only admins") == true)
        // A tenant named after a user, declared with its own list, is not that user's by name.
        #expect(a.refusal(user: "carol", groups: [], admin: false, tenant: "carol") != nil)
        #expect(a.refusal(user: "nobody", groups: [], admin: false, tenant: "alice") != nil)
        // Nothing configured: only one's own tenant.
        let none = try ConfigFile.parse(Self.minimal).accounts
        #expect(none.defaultTenant(for: "bob") == "bob")
        #expect(none.refusal(user: "bob", groups: [], admin: false, tenant: "research") != nil)
        // A user's default must be a tenant they may use.
        #expect(throws: ConfigError.self) {
            try ConfigFile.parse(
                Self.minimal + "\n[accounts]\nuser_defaults = { bob = \"ops\" }\n[[tenant]]\nname = \"ops\"\n"
            )
        }
    }
}
