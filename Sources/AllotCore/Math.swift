/// Elementary functions the standard library lacks, written out so that the core stays free of platform
/// libraries and gives bit-identical results everywhere.
enum Math {
    static let ln2 = 0.693_147_180_559_945_309_417_232_121_458

    /// e^x, accurate to about 1 ulp for |x| < 700.
    static func exp(_ x: Double) -> Double {
        if x.isNaN { return x }
        if x > 709 { return .infinity }
        if x < -745 { return 0 }
        let k = (x / ln2).rounded()
        let r = x - k * ln2
        // Taylor series of e^r for |r| <= ln2/2; 14 terms leave an error under 1e-17.
        var term = 1.0
        var sum = 1.0
        for n in 1...14 {
            term *= r / Double(n)
            sum += term
        }
        return scaleByPowerOfTwo(sum, Int(k))
    }

    /// 2^x.
    static func exp2(_ x: Double) -> Double { exp(x * ln2) }

    private static func scaleByPowerOfTwo(_ v: Double, _ k: Int) -> Double {
        var result = v
        var k = k
        while k > 1000 {
            result *= Double(sign: .plus, exponent: 1000, significand: 1)
            k -= 1000
        }
        while k < -1000 {
            result *= Double(sign: .plus, exponent: -1000, significand: 1)
            k += 1000
        }
        return result * Double(sign: .plus, exponent: k, significand: 1)
    }
}

/// SplitMix64: a small, fast generator whose whole output follows from its seed, the same on every machine
/// (simulations and tests that must replay exactly).
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
