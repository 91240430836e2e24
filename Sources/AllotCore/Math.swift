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
