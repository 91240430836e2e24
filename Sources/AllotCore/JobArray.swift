/// A task of a job array (`allotctl submit --array 0-999%10`): one job of many that share a spec and
/// differ in their index. The array's id is its first task's; its tasks have consecutive ids in index order.
public struct ArrayTask: Hashable, Sendable, Codable {
    /// The array's id (its first task's).
    public var array: JobID
    /// This task's index (`ALLOT_ARRAY_TASK_ID`).
    public var index: Int
    /// At most this many of the array's tasks are queued or running at once; 0 for no limit.
    public var limit: Int

    public init(array: JobID, index: Int, limit: Int = 0) {
        self.array = array
        self.index = index
        self.limit = limit
    }
}

/// The indices of a job array and its limit, as Slurm's `--array` writes them: `0-999`, `0-999:4` (a
/// step), `1,3,5-7`, each with an optional `%10` (at most 10 tasks at once).
public struct ArrayIndices: Hashable, Sendable {
    public var indices: [Int]
    /// At most this many tasks at once; 0 for no limit.
    public var limit: Int

    /// Most tasks in one array, and the largest index.
    public static let maxTasks = 100_000
    public static let maxIndex = 4_000_000

    public static func parse(_ text: String) -> Result<ArrayIndices, RequestTextError> {
        func bad(_ s: String) -> Result<ArrayIndices, RequestTextError> { .failure(RequestTextError(message: s)) }
        var body = Substring(text.filter { $0 != " " })
        var limit = 0
        if let p = body.firstIndex(of: "%") {
            guard let l = Int(body[body.index(after: p)...]), l >= 1 else {
                return bad("\"\(text)\": after % comes how many tasks may run at once, e.g. 0-99%10")
            }
            limit = l
            body = body[..<p]
        }
        var indices: [Int] = []
        var seen = Set<Int>()
        for part in body.split(separator: ",", omittingEmptySubsequences: false) {
            var range = part
            var step = 1
            if let colon = part.firstIndex(of: ":") {
                guard let s = Int(part[part.index(after: colon)...]), s >= 1 else {
                    return bad("\"\(part)\": after : comes a step of 1 or more, e.g. 0-99:2")
                }
                step = s
                range = part[..<colon]
            }
            let ends = range.split(separator: "-", omittingEmptySubsequences: false).map { Int($0) }
            guard (1...2).contains(ends.count), let low = ends[0], let high = ends.last!, low >= 0, low <= high,
                high <= maxIndex
            else {
                return bad(
                    "\"\(part)\": expected indices such as 0-999, 0-999:2 or 1,3,5-7 (from 0 to \(maxIndex))"
                )
            }
            for i in stride(from: low, through: high, by: step) where seen.insert(i).inserted {
                indices.append(i)
                if indices.count > maxTasks {
                    return bad("\"\(text)\": an array holds at most \(maxTasks) tasks")
                }
            }
        }
        guard !indices.isEmpty else { return bad("\"\(text)\": no indices") }
        return .success(ArrayIndices(indices: indices.sorted(), limit: limit))
    }
}
