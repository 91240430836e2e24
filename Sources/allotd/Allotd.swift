import ArgumentParser

@main
struct Allotd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "allotd",
        abstract: "The allot daemon: schedules GPU jobs, keeps its state in a write-ahead log.",
        version: "0.1.0",
        subcommands: [WAL.self]
    )
}
