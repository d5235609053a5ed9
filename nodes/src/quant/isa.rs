//! Which vector code the products run on, chosen once from what the CPU
//! has (or a lesser path named by `KILN_VECTOR`).

/// The vector code a product runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// Portable Rust.
    Generic,
    /// AVX2 and FMA.
    Avx2,
    /// AVX-512 VNNI (with VL): integer dot products in one instruction.
    Avx512Vnni,
}

impl Isa {
    /// The best this CPU has (checked once), or a lesser path named by
    /// `KILN_VECTOR` (`generic`, `avx2`; for comparing them).
    pub fn detected() -> Isa {
        static DETECTED: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *DETECTED.get_or_init(|| {
            let best = Isa::best();
            match std::env::var("KILN_VECTOR").as_deref() {
                Ok("generic") => Isa::Generic,
                Ok("avx2") if best != Isa::Generic => Isa::Avx2,
                _ => best,
            }
        })
    }

    fn best() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            let has = |f: &str| match f {
                "avx512vnni" => std::is_x86_feature_detected!("avx512vnni"),
                "avx512vl" => std::is_x86_feature_detected!("avx512vl"),
                "avx512bw" => std::is_x86_feature_detected!("avx512bw"),
                "avx512dq" => std::is_x86_feature_detected!("avx512dq"),
                "avx2" => std::is_x86_feature_detected!("avx2"),
                "fma" => std::is_x86_feature_detected!("fma"),
                "f16c" => std::is_x86_feature_detected!("f16c"),
                _ => false,
            };
            let avx2 = ["avx2", "fma", "f16c"].into_iter().all(has);
            if avx2
                && ["avx512vnni", "avx512vl", "avx512bw", "avx512dq"]
                    .into_iter()
                    .all(has)
            {
                return Isa::Avx512Vnni;
            }
            if avx2 {
                return Isa::Avx2;
            }
        }
        Isa::Generic
    }

    /// Every path this CPU can run, the portable one first (for tests).
    pub fn available() -> Vec<Isa> {
        match Isa::detected() {
            Isa::Generic => vec![Isa::Generic],
            Isa::Avx2 => vec![Isa::Generic, Isa::Avx2],
            Isa::Avx512Vnni => vec![Isa::Generic, Isa::Avx2, Isa::Avx512Vnni],
        }
    }
}
