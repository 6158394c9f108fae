//! The hostile corpus: whatever a module does, the executor answers with the precise fault and
//! returns within the time limit + 1 s.

mod common;

use std::time::{Duration, Instant};

use common::{guest, limits, run, wat};
use outlayer_executor::{Execution, Fault, Limits, ResponseFormat, ResultMessage};

/// Runs `wasm` and asserts the run ended within its own time limit + 1 s.
fn run_bounded(wasm: &[u8], input: &[u8], limits: Limits) -> Execution {
    let started = Instant::now();
    let execution = run(wasm, input, limits);
    let bound = Duration::from_secs(limits.max_execution_seconds + 1);
    assert!(
        started.elapsed() <= bound,
        "took {:?}, more than the limit + 1 s ({bound:?})",
        started.elapsed()
    );
    execution
}

fn fault(execution: &Execution) -> &Fault {
    match &execution.outcome {
        Ok(stdout) => panic!(
            "expected a fault, guest succeeded with {:?}",
            String::from_utf8_lossy(stdout)
        ),
        Err(fault) => fault,
    }
}

const INFINITE_LOOP: &str = r#"(module
    (memory (export "memory") 1)
    (func (export "_start") (loop $l (br $l))))"#;

#[test]
fn infinite_loop_runs_out_of_fuel() {
    let limits = Limits {
        max_instructions: 5_000_000,
        ..limits()
    };
    let execution = run_bounded(&wat(INFINITE_LOOP), b"", limits);
    assert_eq!(
        fault(&execution),
        &Fault::InstructionLimit { limit: 5_000_000 }
    );
    // Fuel is charged per block, so at most one block's worth may be left unspent.
    assert!(
        execution.instructions <= 5_000_000 && execution.instructions > 4_999_000,
        "{}",
        execution.instructions
    );
    assert_eq!(execution.exit_code, None);
}

#[test]
fn infinite_loop_with_huge_fuel_hits_the_time_limit() {
    let limits = Limits {
        max_instructions: u64::MAX / 2,
        max_execution_seconds: 1,
        ..limits()
    };
    let execution = run_bounded(&wat(INFINITE_LOOP), b"", limits);
    match fault(&execution) {
        Fault::TimeLimit {
            seconds: 1,
            instructions,
        } => {
            assert!(*instructions > 0);
            assert_eq!(*instructions, execution.instructions);
        }
        other => panic!("expected a time limit, got {other:?}"),
    }
    assert!(execution.elapsed >= Duration::from_secs(1));
    let (message, _) = ResultMessage::build(&execution, ResponseFormat::Text, None).unwrap();
    let error = message.error.unwrap();
    assert!(error.starts_with("time limit exceeded after "), "{error}");
}

#[test]
fn memory_grow_loop_hits_the_memory_limit() {
    let wasm = wat(r#"(module
        (memory (export "memory") 1)
        (func (export "_start")
            (loop $l (drop (memory.grow (i32.const 16))) (br $l))))"#);
    let limits = Limits {
        max_memory_mb: 16,
        ..limits()
    };
    let execution = run_bounded(&wasm, b"", limits);
    assert_eq!(fault(&execution), &Fault::MemoryLimit { limit_mib: 16 });
    assert_eq!(
        fault(&execution).to_string(),
        "memory limit exceeded (16 MiB)"
    );
}

#[test]
fn four_gib_initial_memory_is_refused_at_instantiation() {
    let wasm = wat(r#"(module
        (memory (export "memory") 65536)
        (func (export "_start")))"#);
    let execution = run_bounded(&wasm, b"", limits());
    assert_eq!(fault(&execution), &Fault::MemoryLimit { limit_mib: 64 });
}

#[test]
fn unbounded_recursion_is_a_stack_overflow_not_a_crash() {
    let wasm = wat(r#"(module
        (memory (export "memory") 1)
        (func $f (param i64) (result i64) (call $f (i64.add (local.get 0) (i64.const 1))))
        (func (export "_start") (drop (call $f (i64.const 0)))))"#);
    let execution = run_bounded(&wasm, b"", limits());
    assert_eq!(fault(&execution), &Fault::StackOverflow);
}

#[test]
fn hundred_mib_of_stdout_hits_the_output_limit() {
    // Writes a 64 KiB buffer 1600 times (100 MiB) and ignores every error code.
    let wasm = wat(r#"(module
        (import "wasi_snapshot_preview1" "fd_write"
            (func $fd_write (param i32 i32 i32 i32) (result i32)))
        (memory (export "memory") 2)
        (func (export "_start") (local $i i32)
            (i32.store (i32.const 0) (i32.const 1024))
            (i32.store (i32.const 4) (i32.const 65536))
            (loop $l
                (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
                (local.set $i (i32.add (local.get $i) (i32.const 1)))
                (br_if $l (i32.lt_u (local.get $i) (i32.const 1600))))))"#);
    let limits = Limits {
        max_output_bytes: 1024 * 1024,
        ..limits()
    };
    let execution = run_bounded(&wasm, b"", limits);
    assert_eq!(
        fault(&execution),
        &Fault::OutputLimit { limit: 1024 * 1024 }
    );
}

#[test]
fn output_exactly_at_the_limit_is_fine() {
    let wasm = wat(r#"(module
        (import "wasi_snapshot_preview1" "fd_write"
            (func $fd_write (param i32 i32 i32 i32) (result i32)))
        (memory (export "memory") 2)
        (func (export "_start")
            (i32.store (i32.const 0) (i32.const 1024))
            (i32.store (i32.const 4) (i32.const 65536))
            (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#);
    let limits = Limits {
        max_output_bytes: 65536,
        ..limits()
    };
    let execution = run_bounded(&wasm, b"", limits);
    assert_eq!(execution.outcome.unwrap().len(), 65536);
}

#[test]
fn invalid_bytes_are_an_invalid_module() {
    for bytes in [
        &b"\0asm\x01\0\0\0\xff\xff\xff"[..],
        &b"hello, this is not wasm"[..],
        &b""[..],
        &b"(module)"[..],
    ] {
        let execution = run_bounded(bytes, b"", limits());
        assert_eq!(fault(&execution).kind(), "invalidModule", "{bytes:?}");
        assert_eq!(execution.instructions, 0);
    }
}

#[test]
fn unknown_import_is_a_link_error_naming_it() {
    let wasm = wat(r#"(module
        (import "env" "steal_keys" (func $steal))
        (memory (export "memory") 1)
        (func (export "_start") (call $steal)))"#);
    let execution = run_bounded(&wasm, b"", limits());
    let fault = fault(&execution);
    assert_eq!(
        fault,
        &Fault::UnknownImport {
            module: "env".into(),
            name: "steal_keys".into(),
            kind: "function"
        }
    );
    assert!(fault.to_string().contains("`env::steal_keys`"), "{fault}");
}

#[test]
fn wasi_import_with_the_wrong_signature_is_a_link_error() {
    let wasm = wat(r#"(module
        (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32)))
        (memory (export "memory") 1)
        (func (export "_start") (call $w (i32.const 1))))"#);
    let execution = run_bounded(&wasm, b"", limits());
    let fault = fault(&execution);
    assert_eq!(fault.kind(), "link", "{fault}");
    assert!(fault.to_string().contains("fd_write"), "{fault}");
}

#[test]
fn trap_in_the_start_function_is_reported() {
    let wasm = wat(r#"(module
        (memory (export "memory") 1)
        (func $init unreachable)
        (start $init)
        (func (export "_start")))"#);
    let execution = run_bounded(&wasm, b"", limits());
    let fault = fault(&execution);
    assert_eq!(fault.kind(), "trap");
    assert!(fault.to_string().contains("unreachable"), "{fault}");
}

#[test]
fn infinite_loop_in_the_start_function_runs_out_of_fuel() {
    let wasm = wat(r#"(module
        (memory (export "memory") 1)
        (func $init (loop $l (br $l)))
        (start $init)
        (func (export "_start")))"#);
    let limits = Limits {
        max_instructions: 5_000_000,
        ..limits()
    };
    let execution = run_bounded(&wasm, b"", limits);
    assert_eq!(
        fault(&execution),
        &Fault::InstructionLimit { limit: 5_000_000 }
    );
}

const PROC_EXIT: &str = r#"(module
    (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
    (memory (export "memory") 1)
    (func (export "_start") (call $exit (i32.const CODE)) unreachable))"#;

#[test]
fn proc_exit_3_is_a_guest_failure_with_its_code() {
    let execution = run_bounded(&wat(&PROC_EXIT.replace("CODE", "3")), b"", limits());
    assert_eq!(fault(&execution), &Fault::Exit { code: 3 });
    assert_eq!(execution.exit_code, Some(3));
    let (message, text) = ResultMessage::build(&execution, ResponseFormat::Text, None).unwrap();
    assert_eq!(message.exit_code, Some(3));
    assert!(text.contains(r#""exitCode":3"#), "{text}");
}

#[test]
fn proc_exit_0_is_success() {
    let execution = run_bounded(&wat(&PROC_EXIT.replace("CODE", "0")), b"", limits());
    assert_eq!(execution.outcome, Ok(Vec::new()));
    assert_eq!(execution.exit_code, Some(0));
}

#[test]
fn module_over_the_size_limit_is_refused_before_parsing() {
    let wasm = guest("example-echo");
    let limits = Limits {
        max_module_bytes: 1024,
        ..limits()
    };
    let execution = run_bounded(&wasm, b"", limits);
    assert_eq!(
        fault(&execution),
        &Fault::ModuleTooLarge {
            size: wasm.len() as u64,
            limit: 1024
        }
    );
}

#[test]
fn invalid_utf8_with_text_format_is_an_error() {
    let wasm = wat(r#"(module
        (import "wasi_snapshot_preview1" "fd_write"
            (func $fd_write (param i32 i32 i32 i32) (result i32)))
        (memory (export "memory") 1)
        (data (i32.const 100) "ok\ff\fe")
        (func (export "_start")
            (i32.store (i32.const 0) (i32.const 100))
            (i32.store (i32.const 4) (i32.const 4))
            (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#);
    let execution = run_bounded(&wasm, b"", limits());
    let (message, _) = ResultMessage::build(&execution, ResponseFormat::Text, None).unwrap();
    assert!(!message.ok);
    assert_eq!(message.error_kind.as_deref(), Some("invalidUtf8"));
    // The same bytes are fine as Bytes.
    let (message, _) = ResultMessage::build(&execution, ResponseFormat::Bytes, None).unwrap();
    assert!(message.ok);
    assert_eq!(message.output.unwrap().get(), "\"b2v//g==\"");
}

#[test]
fn non_json_with_json_format_is_an_error() {
    let execution = run_bounded(&guest("example-echo"), b"{\"unterminated\": ", limits());
    let (message, _) = ResultMessage::build(&execution, ResponseFormat::Json, None).unwrap();
    assert!(!message.ok);
    assert_eq!(message.error_kind.as_deref(), Some("invalidJson"));
}

#[test]
fn sleeping_past_the_deadline_is_a_time_limit() {
    // poll_oneoff on one relative clock subscription of one hour (wasi-libc's sleep).
    let wasm = wat(r#"(module
        (import "wasi_snapshot_preview1" "poll_oneoff"
            (func $poll (param i32 i32 i32 i32) (result i32)))
        (memory (export "memory") 1)
        (func (export "_start")
            (i32.store8 (i32.const 8) (i32.const 0))
            (i32.store (i32.const 16) (i32.const 1))
            (i64.store (i32.const 24) (i64.const 3600000000000))
            (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))))"#);
    let limits = Limits {
        max_execution_seconds: 1,
        ..limits()
    };
    let execution = run_bounded(&wasm, b"", limits);
    assert_eq!(fault(&execution).kind(), "timeLimit");
}

#[test]
fn short_sleep_within_the_deadline_works() {
    let wasm = wat(r#"(module
        (import "wasi_snapshot_preview1" "poll_oneoff"
            (func $poll (param i32 i32 i32 i32) (result i32)))
        (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
        (memory (export "memory") 1)
        (func (export "_start")
            (i32.store8 (i32.const 8) (i32.const 0))
            (i32.store (i32.const 16) (i32.const 1))
            (i64.store (i32.const 24) (i64.const 10000000))
            (call $exit (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))))"#);
    let execution = run_bounded(&wasm, b"", limits());
    assert_eq!(execution.outcome, Ok(Vec::new()), "errno from poll_oneoff");
    assert!(execution.elapsed >= Duration::from_millis(10));
}

#[test]
fn guest_sees_only_its_program_name_and_no_preopened_dirs() {
    // Exits with argc, or with 100 + errno of fd_prestat_get(3) when argc is 1 (8 = EBADF).
    let wasm = wat(r#"(module
        (import "wasi_snapshot_preview1" "args_sizes_get"
            (func $args (param i32 i32) (result i32)))
        (import "wasi_snapshot_preview1" "fd_prestat_get"
            (func $prestat (param i32 i32) (result i32)))
        (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
        (memory (export "memory") 1)
        (func (export "_start")
            (drop (call $args (i32.const 0) (i32.const 4)))
            (if (i32.ne (i32.load (i32.const 0)) (i32.const 1))
                (then (call $exit (i32.load (i32.const 0)))))
            (call $exit (i32.add (i32.const 100) (call $prestat (i32.const 3) (i32.const 16))))))"#);
    let execution = run_bounded(&wasm, b"", limits());
    assert_eq!(fault(&execution), &Fault::Exit { code: 108 });
}

#[test]
fn missing_start_export_is_reported() {
    let wasm = wat(r#"(module (memory (export "memory") 1) (func (export "main")))"#);
    let execution = run_bounded(&wasm, b"", limits());
    assert_eq!(fault(&execution), &Fault::MissingEntryPoint);
}

#[test]
fn trap_after_stderr_output_carries_the_stderr_tail() {
    let wasm = wat(r#"(module
        (import "wasi_snapshot_preview1" "fd_write"
            (func $fd_write (param i32 i32 i32 i32) (result i32)))
        (memory (export "memory") 1)
        (data (i32.const 100) "panicked at src/main.rs: boom")
        (func (export "_start")
            (i32.store (i32.const 0) (i32.const 100))
            (i32.store (i32.const 4) (i32.const 29))
            (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
            unreachable))"#);
    let execution = run_bounded(&wasm, b"", limits());
    let (message, _) = ResultMessage::build(&execution, ResponseFormat::Text, None).unwrap();
    assert_eq!(message.error_kind.as_deref(), Some("trap"));
    let error = message.error.unwrap();
    assert!(error.contains("unreachable"), "{error}");
    assert!(
        error.ends_with("stderr: panicked at src/main.rs: boom"),
        "{error}"
    );
}

#[test]
fn out_of_bounds_pointer_given_to_wasi_traps() {
    let wasm = wat(r#"(module
        (import "wasi_snapshot_preview1" "fd_write"
            (func $fd_write (param i32 i32 i32 i32) (result i32)))
        (memory (export "memory") 1)
        (func (export "_start")
            (i32.store (i32.const 0) (i32.const 65000))
            (i32.store (i32.const 4) (i32.const 100000))
            (if (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))
                (then unreachable))))"#);
    let execution = run_bounded(&wasm, b"", limits());
    // Either wasi-common's trap or the guest's unreachable: a trap, never a host crash.
    assert_eq!(fault(&execution).kind(), "trap");
}
