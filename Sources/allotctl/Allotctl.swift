import ArgumentParser

@main
struct Allotctl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "allotctl",
        abstract: "Control allot, the GPU pool scheduler.",
        discussion: """
            allotctl talks to allotd over its Unix socket, and runs the scheduler offline on job traces \
            (simulate).
            """,
        version: "0.1.0",
        subcommands: [Simulate.self]
    )
}
