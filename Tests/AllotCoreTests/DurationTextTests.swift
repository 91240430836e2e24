import Testing

@testable import AllotCore

@Suite struct DurationTextTests {
    @Test(arguments: [
        ("90", 90.0), ("90s", 90), ("15m", 900), ("2h", 7200), ("1d", 86_400), ("1h30m", 5400),
        // Slurm's forms: M:S, H:M:S, D-H, D-H:M, D-H:M:S.
        ("45:00", 2700), ("1:00:00", 3600), ("2-00:00:00", 172_800), ("1-12", 129_600), ("1-00:30", 88_200),
        ("0:90", 90),
    ])
    func parses(_ text: String, _ seconds: Double) {
        #expect(DurationText.parse(text) == seconds, "\(text)")
    }

    @Test(arguments: ["", "-1", "1:", ":30", "1:2:3:4", "1-", "-1:00", "a:00", "1x", "1.5:00", "1--2"])
    func refuses(_ text: String) {
        #expect(DurationText.parse(text) == nil, "\(text)")
    }
}
