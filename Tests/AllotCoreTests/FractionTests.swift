import PropertyBased
import Testing

@testable import AllotCore

/// The fraction placement core: the fragment and stranded measures on hand-built nodes, each rule's choice
/// where the rules differ, and, for random pools and requests, that nothing is ever given twice.
@Suite struct FractionTests {
    static func node(model: Int = 0, gpus: Int, cpus: Int, gib: Int = 256) -> NodeResources {
        NodeResources(model: model, gpus: gpus, cpuMilli: cpus * 1000, memoryMiB: gib * 1024)
    }

    static func share(_ milli: Int, cpus: Int = 1, models: UInt64 = ~0) -> ResourceRequest {
        ResourceRequest(gpus: 1, gpuMilli: milli, cpuMilli: cpus * 1000, memoryMiB: 1024, models: models)
    }

    @Test func theFragmentIsTheRoomEachShapeCannotUse() {
        var n = Self.node(gpus: 2, cpus: 32)
        n.take(Self.share(700), gpus: [1])  // free: [1000, 300]
        let half = WorkloadMix(shapes: [.init(request: Self.share(500), weight: 1)])
        // A half share fits GPU 0; GPU 1's 300 is too small for it.
        #expect(half.fragment(of: n) == 300)
        let whole = WorkloadMix(shapes: [.init(request: ResourceRequest(gpus: 2, cpuMilli: 1000), weight: 1)])
        // Two whole GPUs do not fit at all: all 1,300 free milli-GPUs are fragment.
        #expect(whole.fragment(of: n) == 1300)
        let mixed = WorkloadMix(shapes: [
            .init(request: Self.share(500), weight: 3), .init(request: ResourceRequest(gpus: 2), weight: 1),
        ])
        #expect(mixed.fragment(of: n) == 0.75 * 300 + 0.25 * 1300)
        // A shape the node's CPUs cannot hold sees all of its free GPU as fragment.
        let hungry = WorkloadMix(shapes: [.init(request: Self.share(500, cpus: 64), weight: 1)])
        #expect(hungry.fragment(of: n) == 1300)
        // A node with no free GPU has no fragment.
        var full = Self.node(gpus: 1, cpus: 4)
        full.take(ResourceRequest(gpus: 1), gpus: [0])
        #expect(mixed.fragment(of: full) == 0)
    }

    @Test func strandedCapacityCountsGPUsTheCPUsCannotFeed() {
        // 4 GPUs and 12 CPUs; the expected request is one GPU with 8 CPUs: only one fits, three GPUs are stranded.
        let n = Self.node(gpus: 4, cpus: 12)
        let mix = WorkloadMix(shapes: [.init(request: ResourceRequest(gpus: 1, cpuMilli: 8000), weight: 1)])
        #expect(mix.fragment(of: n) == 0)  // FGD's measure sees none: one more request fits
        #expect(mix.stranded(on: n) == 3000)
        // Shares of 0.3: three fit a GPU and leave 0.1 of it.
        let shares = WorkloadMix(shapes: [.init(request: Self.share(300, cpus: 0), weight: 1)])
        #expect(shares.stranded(on: Self.node(gpus: 2, cpus: 64)) == 200)
        // A model the shape may not use strands everything.
        let other = WorkloadMix(shapes: [.init(request: Self.share(300, models: 1 << 1), weight: 1)])
        #expect(other.stranded(on: Self.node(gpus: 2, cpus: 64)) == 2000)
    }

    @Test func theMixKeepsTheCommonShapesUpToItsCoverage() {
        let a = Self.share(500)
        let b = ResourceRequest(gpus: 1)
        let c = ResourceRequest(gpus: 8)
        let requests = Array(repeating: a, count: 60) + Array(repeating: b, count: 37) + Array(repeating: c, count: 3)
        let mix = WorkloadMix(requests: requests, coverage: 0.95)
        #expect(mix.shapes.map(\.request) == [a, b])
        #expect(abs(mix.shapes[0].weight - 60.0 / 97) < 1e-12)
        #expect(abs(mix.shapes.reduce(0) { $0 + $1.weight } - 1) < 1e-12)
        #expect(WorkloadMix(requests: requests, coverage: 1).shapes.count == 3)
    }

    @Test func sharesFillBrokenGPUsAndWholeGPUsKeepNodesWhole() {
        let mix = WorkloadMix(shapes: [
            .init(request: Self.share(500), weight: 1), .init(request: ResourceRequest(gpus: 1), weight: 1),
            .init(request: ResourceRequest(gpus: 2), weight: 1),
        ])
        var pool = FractionPool(
            nodes: [Self.node(gpus: 2, cpus: 64), Self.node(gpus: 2, cpus: 64)],
            mix: mix,
            rule: .allot
        )
        let first = pool.place(Self.share(500))
        let second = pool.place(Self.share(500))
        // The second half share goes on the GPU the first one broke.
        #expect(first == second)
        // A whole GPU goes beside them, so that node 1 stays whole for a two-GPU request.
        let whole = pool.place(ResourceRequest(gpus: 1))
        #expect(whole?.node == first?.node)
        #expect(pool.nodes[1 - first!.node].wholeFreeGPUs == 2)
        #expect(pool.place(ResourceRequest(gpus: 2)) != nil)
    }

    @Test func theUnfillableRoomIsWhatNoMixOfShareSizesFills() {
        let mix = WorkloadMix(shapes: [
            .init(request: Self.share(470), weight: 1), .init(request: Self.share(320), weight: 1),
            .init(request: ResourceRequest(gpus: 1), weight: 1),
        ])
        #expect(mix.unfillable(room: 190) == 190)  // below every share size
        #expect(mix.unfillable(room: 530) == 60)  // one 0.47
        #expect(mix.unfillable(room: 640) == 0)  // two 0.32
        #expect(mix.unfillable(room: 800) == 10)  // 0.47 and 0.32
        #expect(mix.unfillable(room: 0) == 0)
        #expect(mix.unfillable(room: 1000) == 0)  // a whole GPU is for whole-GPU requests
        // Without shares in the mix, any broken room is lost.
        let whole = WorkloadMix(shapes: [.init(request: ResourceRequest(gpus: 1), weight: 1)])
        #expect(whole.unfillable(room: 999) == 999)
    }

    /// A 0.32 share beside GPUs with 0.47 and 0.64 free: the fragment and stranded capacity alone take the
    /// 0.47 (leaving 0.15 that nothing fills); counting shares of mixed sizes takes the 0.64, whose 0.32 left
    /// fits another, and keeps the 0.47 for a 0.47.
    @Test func aShareLeavesRoomThatTheOtherSharesFill() {
        let mix = WorkloadMix(shapes: [
            .init(request: Self.share(470), weight: 1), .init(request: Self.share(320), weight: 1),
        ])
        var a = Self.node(gpus: 1, cpus: 64)
        a.take(Self.share(530), gpus: [0])
        var b = Self.node(gpus: 1, cpus: 64)
        b.take(Self.share(360), gpus: [0])
        var pool = FractionPool(nodes: [a, b], mix: mix, rule: .allot)
        #expect(pool.place(Self.share(320))?.node == 1)
        #expect(pool.place(Self.share(470))?.node == 0)
        #expect(pool.place(Self.share(320))?.node == 1)
        #expect(pool.nodes.map(\.freeGPUMilli) == [0, 0])
    }

    /// A CPU-only job on a node with few CPUs per GPU leaves GPUs no request can use; FGD's one-step measure
    /// does not see it, allot's stranded capacity does.
    @Test func cpuOnlyJobsGoWhereTheyStrandNoGPU() {
        let mix = WorkloadMix(shapes: [
            .init(request: ResourceRequest(gpus: 1, cpuMilli: 2000, memoryMiB: 1024), weight: 9),
            .init(request: ResourceRequest(gpus: 0, cpuMilli: 2000, memoryMiB: 1024), weight: 1),
        ])
        let nodes = [Self.node(gpus: 2, cpus: 4), Self.node(gpus: 2, cpus: 64)]
        let cpuJob = ResourceRequest(gpus: 0, cpuMilli: 2000, memoryMiB: 1024)
        var allot = FractionPool(nodes: nodes, mix: mix, rule: .allot)
        var fgd = FractionPool(nodes: nodes, mix: mix, rule: .fgd)
        #expect(allot.place(cpuJob)?.node == 1)
        #expect(fgd.place(cpuJob)?.node == 0)
    }

    /// Two nodes alike but for their model (0 and 1), placed by the `allot` rule.
    static func twoModels(_ mix: WorkloadMix) -> FractionPool {
        FractionPool(
            nodes: [node(model: 0, gpus: 4, cpus: 64), node(model: 1, gpus: 4, cpus: 64)],
            mix: mix,
            rule: .allot
        )
    }

    /// Requests that may run anywhere leave the model that others can only use.
    @Test func flexibleRequestsLeaveTheScarceModel() {
        let onlyModel0 = ResourceRequest(gpus: 1, cpuMilli: 1000, models: 1 << 0)
        let any = ResourceRequest(gpus: 1, cpuMilli: 1000)
        let mix = WorkloadMix(shapes: [.init(request: onlyModel0, weight: 1), .init(request: any, weight: 1)])
        var pool = Self.twoModels(mix)
        #expect(pool.modelPrice[0] > 1 && pool.modelPrice[1] < 1)
        #expect(pool.place(any)?.node == 1)
        #expect(pool.place(onlyModel0)?.node == 0)
    }

    /// Scarcity is measured on every shape seen, not only the typical ones: tasks that name a model in many
    /// rare shapes (as a third of openb's gpuspec33 tasks do) still make their model scarce.
    @Test func rareShapesThatNameAModelStillMakeItScarce() {
        let any = ResourceRequest(gpus: 1, cpuMilli: 1000)
        // 90 flexible requests and 10 that may only use model 0, each in a shape of its own.
        let rare = (2...11).map { ResourceRequest(gpus: 1, cpuMilli: $0 * 1000, models: 1 << 0) }
        let mix = WorkloadMix(requests: Array(repeating: any, count: 90) + rare, coverage: 0.9)
        #expect(mix.shapes.map(\.request) == [any])
        #expect(mix.everyShape.count == 11)
        var pool = Self.twoModels(mix)
        #expect(pool.modelPrice[0] > 1 && pool.modelPrice[1] < 1)
        // The two nodes differ only in their model: the flexible request leaves model 0 to those that need it.
        #expect(pool.place(any)?.node == 1)
    }

    @Test func aRequestThatFitsNowhereTakesNothing() {
        var pool = FractionPool(
            nodes: [Self.node(gpus: 2, cpus: 8)],
            mix: WorkloadMix(shapes: [.init(request: ResourceRequest(gpus: 1), weight: 1)]),
            rule: .allot
        )
        let before = pool.nodes
        #expect(pool.place(ResourceRequest(gpus: 4)) == nil)
        #expect(pool.place(ResourceRequest(gpus: 1, cpuMilli: 9000)) == nil)
        #expect(pool.place(Self.share(500, models: 1 << 3)) == nil)
        #expect(pool.nodes == before)
    }

    @Test func requestsExplainWhatIsWrongWithThem() {
        #expect(
            ResourceRequest(gpus: 2, gpuMilli: 500).problems() == [
                "a share of a GPU (500 milli-GPUs) is for one GPU, not 2"
            ]
        )
        #expect(ResourceRequest(gpus: 1, gpuMilli: 0).problems().first?.contains("between 1 and 1000") == true)
        #expect(ResourceRequest(gpus: 0).problems() == ["the request asks for nothing"])
        #expect(ResourceRequest(gpus: 1, cpuMilli: -1).problems() == ["CPUs must not be negative"])
        #expect(Self.share(250, cpus: 6).description == "0.25 GPU, 6 CPUs, 1 GiB")
        #expect(ResourceRequest(gpus: 2, cpuMilli: 1500, memoryMiB: 500).description == "2 GPUs, 1.5 CPUs, 500 MiB")
        #expect(Fraction.text(1050) == "1.05")
    }

    // MARK: Properties

    /// A random pool (up to 12 nodes of 1–10 GPUs, three models) and random requests, placed by a rule, then
    /// given back in a random order: every choice fits the request (GPUs, model, CPUs, memory), no GPU, CPU or
    /// MiB is given twice, a request fails only when no node could hold it, and giving everything back
    /// restores the pool.
    static func check(rule: FractionPool.Rule, _ ops: [Int]) -> [String] {
        var problems: [String] = []
        var k = 0
        func next(_ n: Int) -> Int {
            defer { k += 1 }
            return ops.isEmpty ? 0 : ops[k % ops.count] % n
        }
        let nodes = (0..<(1 + next(12))).map { _ in
            NodeResources(
                model: next(3),
                gpus: 1 + next(10),
                cpuMilli: 1000 * (2 + next(60)),
                memoryMiB: 1024 * (4 + next(500))
            )
        }
        func request() -> ResourceRequest {
            let gpus = [0, 1, 1, 1, 1, 2, 4, 8][next(8)]
            let milli = gpus == 1 && next(2) == 0 ? [100, 250, 300, 470, 500, 810][next(6)] : 1000
            let models: UInt64 = next(3) == 0 ? 1 << UInt64(next(3)) : ~0
            return ResourceRequest(
                gpus: gpus,
                gpuMilli: milli,
                cpuMilli: 500 * next(24) + (gpus == 0 ? 500 : 0),
                memoryMiB: 1024 * next(64),
                models: models
            )
        }
        let mix = WorkloadMix(requests: (0..<40).map { _ in request() })
        var pool = FractionPool(nodes: nodes, mix: mix, rule: rule, seed: UInt64(ops.first ?? 0))
        var held: [(ResourceRequest, FractionPool.Choice)] = []
        for _ in 0..<(10 + next(80)) {
            let r = request()
            let before = pool.nodes
            guard let c = pool.place(r) else {
                if before.contains(where: { $0.canHost(r) }) {
                    problems.append("\(r) failed although a node could hold it")
                }
                if pool.nodes != before { problems.append("a failed request changed the pool") }
                continue
            }
            let n = before[c.node]
            if r.models & (1 << UInt64(n.model)) == 0 { problems.append("\(r) placed on model \(n.model)") }
            if Set(c.gpus).count != r.gpus { problems.append("\(r) got GPUs \(c.gpus)") }
            for g in c.gpus where n.gpuFree[g] < r.gpuMilli {
                problems.append("\(r) placed on GPU \(g) with \(n.gpuFree[g]) free")
            }
            held.append((r, c))
            for m in pool.nodes {
                if m.cpuFree < 0 || m.memoryFree < 0 || m.gpuFree.contains(where: { $0 < 0 || $0 > 1000 }) {
                    problems.append("oversubscribed: \(m)")
                }
            }
        }
        // What the pool says is allocated is what the requests hold.
        let heldMilli = held.reduce(0) { $0 + $1.0.totalGPUMilli }
        if pool.allocatedGPUMilli != heldMilli {
            problems.append("allocated \(pool.allocatedGPUMilli), held \(heldMilli)")
        }
        let ratio = pool.fragmentRatio
        if !(ratio >= 0 && ratio <= 1.000_001) { problems.append("fragment ratio \(ratio)") }
        while !held.isEmpty {
            let (r, c) = held.remove(at: next(held.count))
            pool.release(r, from: c)
        }
        if pool.nodes != nodes { problems.append("giving everything back did not restore the pool") }
        if pool.fragment != FractionPool(nodes: nodes, mix: mix, rule: rule).fragment {
            problems.append("the fragment after giving back differs from a fresh pool's")
        }
        return problems
    }

    @Test(arguments: FractionPool.Rule.allCases)
    func nothingIsGivenTwiceAndEverythingComesBack(rule: FractionPool.Rule) async {
        await propertyCheck(count: 60, input: Gen.int(in: 0...999_983).array(of: 20...200)) { ops in
            let problems = Self.check(rule: rule, ops)
            #expect(problems.isEmpty, "\(problems.prefix(5))")
        }
    }
}

@Suite struct SizeTextTests {
    @Test func memorySizesReadAsTheConfigAndSlurmReadThem() {
        #expect(Fraction.mebibytes(parsing: "64GiB") == 65536)
        #expect(Fraction.mebibytes(parsing: "64G") == 65536)
        #expect(Fraction.mebibytes(parsing: "1.5 TiB") == 1_572_864)
        #expect(Fraction.mebibytes(parsing: "512MiB") == 512)
        #expect(Fraction.mebibytes(parsing: "2048") == 2048)
        #expect(Fraction.mebibytes(parsing: "1GB") == 954)  // decimal, rounded up to whole MiB
        #expect(Fraction.mebibytes(parsing: "100k") == 1)
        for bad in ["lots", "0GiB", "-1G", "", "GiB"] { #expect(Fraction.mebibytes(parsing: bad) == nil, "\(bad)") }
        #expect(ByteSize.parse(withUnit: "64MiB") == 64 << 20)
        #expect(ByteSize.parse(withUnit: "512k") == 512 << 10)
        #expect(ByteSize.parse(withUnit: "67108864") == nil)
    }
}
