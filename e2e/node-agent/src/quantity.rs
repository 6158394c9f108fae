//! Just enough of Kubernetes resource quantities for `resourceFieldRef` (env and downward API).

/// The value of a quantity in base units (cores, bytes), e.g. `500m` → 0.5, `1Ki` → 1024.
pub fn parse(quantity: &str) -> Option<f64> {
    let q = quantity.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0f64.powi(4),
        "Pi" => 1024.0f64.powi(5),
        "Ei" => 1024.0f64.powi(6),
        exp if exp.starts_with(['e', 'E']) => 10f64.powi(exp[1..].parse().ok()?),
        _ => return None,
    };
    Some(number * factor)
}

/// `ceil(value / divisor)` as the kubelet renders resourceFieldRef values (at least 1 for cpu).
pub fn divide_ceil(value: f64, divisor: f64, is_cpu: bool) -> i64 {
    let v = (value / divisor).ceil() as i64;
    if is_cpu { v.max(1) } else { v }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_quantities() {
        assert_eq!(parse("500m"), Some(0.5));
        assert_eq!(parse("2"), Some(2.0));
        assert_eq!(parse("128Mi"), Some(134_217_728.0));
        assert_eq!(parse("1G"), Some(1e9));
        assert_eq!(parse("1e3"), Some(1000.0));
        assert_eq!(parse("1x"), None);
    }

    #[test]
    fn divides_like_the_kubelet() {
        assert_eq!(divide_ceil(0.5, 1.0, true), 1);
        assert_eq!(divide_ceil(0.5, 0.001, true), 500);
        assert_eq!(divide_ceil(134_217_728.0, 1_048_576.0, false), 128);
    }
}
