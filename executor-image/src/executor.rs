//! One execution: load, link, instantiate and run `_start` in fuel slices under a deadline.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use wasmi::errors::{ErrorKind, LinkerError};
use wasmi::{
    CompilationMode, Config, Engine, ExternType, Linker, Module, ResumableCall, Store, TrapCode,
};
use wasmi_wasi::wasi_common::pipe::ReadPipe;
use wasmi_wasi::wasi_common::{Table, WasiCtx};

use crate::config::{Deterministic, Limits, SYSTEM_ENV_NAMES, SystemEnv};
use crate::determinism::{SeededRng, fixed_clocks};
use crate::error::{Fault, PlatformError};
use crate::limiter::MemoryLimiter;
use crate::sched::DeadlineSched;
use crate::stdio::{CappedStdout, StderrTail};

/// How long the guest runs between two looks at the clock. The fuel per slice adapts to hit
/// this, because fuel per second varies ~100x between builds, machines and load; a fixed slice
/// that is cheap in release would overshoot the deadline by seconds in a debug build.
const SLICE_TARGET: Duration = Duration::from_millis(10);
/// Fuel of the first slice, and the bounds of the adaptation: the upper bound keeps one slice
/// well under a second even at the fastest rates, the lower bound keeps slicing overhead small.
const FIRST_SLICE: u64 = 1_000_000;
const MIN_SLICE: u64 = 10_000;
const MAX_SLICE: u64 = 100_000_000;
/// wasmi's default (1000) is too shallow for ordinary recursive guest code (parsers, tree
/// walks); the value stack height still bounds host memory.
const MAX_RECURSION_DEPTH: usize = 10_000;
/// `argv[0]`; guests get no other arguments.
const PROGRAM_NAME: &str = "guest";
const WASM_MAGIC: &[u8; 4] = b"\0asm";

/// What the store carries for host functions and the resource limiter.
struct Host {
    wasi: WasiCtx,
    limiter: MemoryLimiter,
}

/// One execution's inputs.
#[derive(Debug, Clone, Copy)]
pub struct Job<'a> {
    /// The module bytes, already verified against the expected checksum.
    pub wasm: &'a [u8],
    /// Fed to the guest as stdin.
    pub input: &'a [u8],
    /// Extra environment variables (unsealed secrets).
    pub secrets: &'a BTreeMap<String, String>,
    pub system: &'a SystemEnv,
    pub limits: Limits,
    pub deterministic: Option<&'a Deterministic>,
}

/// What happened: the guest's stdout on success, or the fault; plus the measurements the
/// contract charges for.
#[derive(Debug)]
pub struct Execution {
    pub outcome: Result<Vec<u8>, Fault>,
    /// Fuel consumed by execution, including any start function.
    pub instructions: u64,
    /// Wall time from the start of loading to the end of execution.
    pub elapsed: Duration,
    /// 0 when `_start` returned or the guest called `proc_exit(0)`; the code of a non-zero exit.
    pub exit_code: Option<i32>,
    /// The last bytes the guest wrote to stderr.
    pub stderr: Vec<u8>,
}

/// The wasmi engine and WASI linker, built once and reused for every execution.
pub struct Executor {
    engine: Engine,
    linker: Linker<Host>,
}

impl Executor {
    pub fn new() -> Result<Self, PlatformError> {
        let mut config = Config::default();
        config
            .consume_fuel(true)
            // Lazy translation charges compile fuel on a function's first call, and running out
            // of fuel there is a non-resumable error in wasmi 2.0: with small slices a guest
            // would fail with budget left. Eager translation charges no fuel at all, so the
            // count is pure execution and independent of slicing.
            .compilation_mode(CompilationMode::Eager)
            // WASI preview 1 is 32-bit; 64-bit memories would only widen what a guest can ask for.
            .wasm_memory64(false)
            .set_max_recursion_depth(MAX_RECURSION_DEPTH);
        let engine = Engine::new(&config);
        let mut linker = Linker::new(&engine);
        wasmi_wasi::add_to_linker(&mut linker, |host: &mut Host| &mut host.wasi)
            .map_err(|error| PlatformError::Setup(format!("linking WASI: {error}")))?;
        Ok(Self { engine, linker })
    }

    /// Runs one job to completion. Never panics on guest behaviour; every guest failure comes
    /// back as a [`Fault`] in [`Execution::outcome`].
    pub fn run(&self, job: &Job<'_>) -> Execution {
        let started = Instant::now();
        let deadline = started + Duration::from_secs(job.limits.max_execution_seconds);
        let mut run = Run {
            limits: job.limits,
            stdout: CappedStdout::new(job.limits.max_output_bytes),
            stderr: StderrTail::new(),
            deadline,
            deadline_hit: Arc::new(AtomicBool::new(false)),
            fuel_reserve: job.limits.max_instructions,
            exit_code: None,
        };
        let mut store = None;
        let result = run.execute(self, job, &mut store);
        let instructions = store.as_ref().map_or(0, |store| run.used_fuel(store));
        let outcome = result.map(|()| run.stdout.take());
        Execution {
            outcome,
            instructions,
            elapsed: started.elapsed(),
            exit_code: run.exit_code,
            stderr: run.stderr.contents(),
        }
    }
}

/// The state of one execution while it runs.
struct Run {
    limits: Limits,
    stdout: CappedStdout,
    stderr: StderrTail,
    deadline: Instant,
    deadline_hit: Arc<AtomicBool>,
    /// Fuel not yet handed to the store; the store holds at most one slice at a time so the loop
    /// regains control to check the clock.
    fuel_reserve: u64,
    exit_code: Option<i32>,
}

/// How a guest stopped short of returning from `_start`.
enum Stop {
    Exit(i32),
    Fault(Fault),
}

impl Run {
    fn execute(
        &mut self,
        executor: &Executor,
        job: &Job<'_>,
        store_slot: &mut Option<Store<Host>>,
    ) -> Result<(), Fault> {
        let size = job.wasm.len() as u64;
        if size > self.limits.max_module_bytes {
            return Err(Fault::ModuleTooLarge {
                size,
                limit: self.limits.max_module_bytes,
            });
        }
        validate_secrets(job.secrets)?;
        // Only binary modules: wasmi would otherwise also parse WAT text.
        if !job.wasm.starts_with(WASM_MAGIC) {
            return Err(Fault::InvalidModule(
                "not a WebAssembly binary (missing the \\0asm header)".to_string(),
            ));
        }
        let module = Module::new(&executor.engine, job.wasm)
            .map_err(|error| Fault::InvalidModule(error.to_string()))?;

        let wasi = self.wasi_ctx(job)?;
        let mut store = Store::new(
            &executor.engine,
            Host {
                wasi,
                limiter: MemoryLimiter::new(self.limits.max_memory_bytes()),
            },
        );
        store.limiter(|host| &mut host.limiter);
        let store = store_slot.insert(store);

        // A start function runs inside instantiation, outside the slice loop: it gets the whole
        // budget and only fuel bounds it here (the binary's watchdog bounds its wall time).
        self.hand_fuel(store, self.fuel_reserve);
        let instance = match executor.linker.instantiate_and_start(&mut *store, &module) {
            Ok(instance) => instance,
            Err(error) => {
                // The limiter's flag wins: a refused initial memory surfaces as an
                // instantiation error, but its cause is the memory limit.
                let stop = match instantiation_stop(&error) {
                    Some(stop) if !store.data().limiter.exceeded() => stop,
                    _ => self.classify(&error, store),
                };
                return self.stopped(stop);
            }
        };
        self.reclaim_fuel(store);

        let Some(start) = instance.get_func(&*store, "_start") else {
            return Err(Fault::MissingEntryPoint);
        };
        let ty = start.ty(&*store);
        if !ty.params().is_empty() || !ty.results().is_empty() {
            return Err(Fault::MissingEntryPoint);
        }

        self.check_deadline(store)?;
        let mut slice = FIRST_SLICE;
        let mut slice_started = Instant::now();
        self.hand_fuel(store, slice);
        let mut call = start.call_resumable(&mut *store, &[], &mut []);
        loop {
            match call {
                Ok(ResumableCall::Finished) => {
                    self.exit_code = Some(0);
                    return self.check_output_not_overflowed();
                }
                Ok(ResumableCall::HostTrap(trap)) => {
                    let error = trap.into_host_error();
                    let stop = self.classify(&error, store);
                    return self.stopped(stop);
                }
                Ok(ResumableCall::OutOfFuel(paused)) => {
                    if self.fuel_reserve == 0 {
                        return Err(Fault::InstructionLimit {
                            limit: self.limits.max_instructions,
                        });
                    }
                    self.check_deadline(store)?;
                    // Slicing never changes the instruction count: wasmi charges a block's fuel
                    // only once enough is available (tested in tests/guests.rs).
                    slice = next_slice(slice, slice_started.elapsed());
                    slice_started = Instant::now();
                    self.hand_fuel(store, slice);
                    call = paused.resume(&mut *store, &mut []);
                }
                Err(error) => {
                    let stop = self.classify(&error, store);
                    return self.stopped(stop);
                }
            }
        }
    }

    fn wasi_ctx(&self, job: &Job<'_>) -> Result<WasiCtx, Fault> {
        let sched = Box::new(DeadlineSched::new(self.deadline, self.deadline_hit.clone()));
        let (random, clocks): (Box<dyn wasmi_wasi::wasi_common::RngCore + Send + Sync>, _) =
            match job.deterministic {
                Some(deterministic) => (
                    Box::new(SeededRng::new(&deterministic.seed)),
                    fixed_clocks(deterministic.unix_time_nanos),
                ),
                None => (wasmi_wasi::random_ctx(), wasmi_wasi::clocks_ctx()),
            };
        let mut ctx = WasiCtx::new(random, clocks, sched, Table::new());
        ctx.set_stdin(Box::new(ReadPipe::from(job.input)));
        ctx.set_stdout(Box::new(self.stdout.clone()));
        ctx.set_stderr(Box::new(self.stderr.clone()));
        let invalid = |error: wasmi_wasi::wasi_common::StringArrayError| {
            Fault::InvalidSecrets(format!("environment too large for WASI: {error}"))
        };
        ctx.push_arg(PROGRAM_NAME).map_err(invalid)?;
        for (name, value) in job.system.vars(&job.limits) {
            ctx.push_env(name, &value).map_err(invalid)?;
        }
        for (name, value) in job.secrets {
            ctx.push_env(name, value).map_err(invalid)?;
        }
        Ok(ctx)
    }

    /// Moves up to `amount` fuel from the reserve into the store.
    fn hand_fuel(&mut self, store: &mut Store<Host>, amount: u64) {
        let give = amount.min(self.fuel_reserve);
        let held = store.get_fuel().unwrap_or(0);
        // Fuel metering is enabled in `Executor::new`, so `set_fuel` cannot fail.
        if store.set_fuel(held.saturating_add(give)).is_ok() {
            self.fuel_reserve -= give;
        }
    }

    /// Moves the store's unspent fuel back to the reserve.
    fn reclaim_fuel(&mut self, store: &mut Store<Host>) {
        let held = store.get_fuel().unwrap_or(0);
        if store.set_fuel(0).is_ok() {
            self.fuel_reserve += held;
        }
    }

    fn used_fuel(&self, store: &Store<Host>) -> u64 {
        let held = store.get_fuel().unwrap_or(0);
        self.limits
            .max_instructions
            .saturating_sub(self.fuel_reserve)
            .saturating_sub(held)
    }

    fn check_deadline(&self, store: &Store<Host>) -> Result<(), Fault> {
        if Instant::now() >= self.deadline {
            return Err(Fault::TimeLimit {
                seconds: self.limits.max_execution_seconds,
                instructions: self.used_fuel(store),
            });
        }
        Ok(())
    }

    fn check_output_not_overflowed(&self) -> Result<(), Fault> {
        // The overflow traps the guest, but a guest could catch nothing here; this guards the
        // invariant that an overflowed stdout never counts as a result.
        if self.stdout.overflowed() {
            return Err(Fault::OutputLimit {
                limit: self.limits.max_output_bytes,
            });
        }
        Ok(())
    }

    fn stopped(&mut self, stop: Stop) -> Result<(), Fault> {
        match stop {
            Stop::Exit(0) => {
                self.exit_code = Some(0);
                self.check_output_not_overflowed()
            }
            Stop::Exit(code) => {
                self.exit_code = Some(code);
                Err(Fault::Exit { code })
            }
            Stop::Fault(fault) => Err(fault),
        }
    }

    /// Names the cause of a trap or host error. Limits the executor itself enforced come first:
    /// their traps carry generic messages, the flags carry the cause.
    fn classify(&self, error: &wasmi::Error, store: &Store<Host>) -> Stop {
        if store.data().limiter.exceeded() {
            return Stop::Fault(Fault::MemoryLimit {
                limit_mib: self.limits.max_memory_mb,
            });
        }
        if self.stdout.overflowed() {
            return Stop::Fault(Fault::OutputLimit {
                limit: self.limits.max_output_bytes,
            });
        }
        if self.deadline_hit.load(Ordering::SeqCst) {
            return Stop::Fault(Fault::TimeLimit {
                seconds: self.limits.max_execution_seconds,
                instructions: self.used_fuel(store),
            });
        }
        if let Some(code) = error.i32_exit_status() {
            return Stop::Exit(code);
        }
        Stop::Fault(match error.as_trap_code() {
            Some(TrapCode::OutOfFuel) => Fault::InstructionLimit {
                limit: self.limits.max_instructions,
            },
            Some(TrapCode::StackOverflow) => Fault::StackOverflow,
            Some(code) => Fault::Trap(code.trap_message().to_string()),
            None => Fault::Trap(error.to_string()),
        })
    }
}

/// Doubles or halves the slice towards [`SLICE_TARGET`].
fn next_slice(slice: u64, took: Duration) -> u64 {
    let next = if took < SLICE_TARGET / 2 {
        slice.saturating_mul(2)
    } else if took > SLICE_TARGET * 2 {
        slice / 2
    } else {
        slice
    };
    next.clamp(MIN_SLICE, MAX_SLICE)
}

/// Link errors are reported as such; anything else failing in instantiation is the start
/// function's doing and classified like a trap.
fn instantiation_stop(error: &wasmi::Error) -> Option<Stop> {
    match error.kind() {
        ErrorKind::Linker(LinkerError::MissingDefinition { name, ty }) => {
            Some(Stop::Fault(Fault::UnknownImport {
                module: name.module().to_string(),
                name: name.name().to_string(),
                kind: match ty {
                    ExternType::Func(_) => "function",
                    ExternType::Global(_) => "global",
                    ExternType::Table(_) => "table",
                    ExternType::Memory(_) => "memory",
                },
            }))
        }
        ErrorKind::Linker(_) | ErrorKind::Instantiation(_) => {
            Some(Stop::Fault(Fault::Link(error.to_string())))
        }
        _ => None,
    }
}

/// Secrets become environment variables: names must be valid and must not shadow the platform's.
fn validate_secrets(secrets: &BTreeMap<String, String>) -> Result<(), Fault> {
    for (name, value) in secrets {
        let mut chars = name.chars();
        let valid = chars
            .next()
            .is_some_and(|first| first == '_' || first.is_ascii_alphabetic())
            && chars.all(|c| c == '_' || c.is_ascii_alphanumeric());
        if !valid {
            return Err(Fault::InvalidSecrets(format!(
                "secret name {name:?} is not a valid environment variable name ([A-Za-z_][A-Za-z0-9_]*)"
            )));
        }
        if SYSTEM_ENV_NAMES.contains(&name.as_str()) {
            return Err(Fault::InvalidSecrets(format!(
                "secret {name} collides with a system variable the platform sets"
            )));
        }
        if value.contains('\0') {
            return Err(Fault::InvalidSecrets(format!(
                "secret {name} contains a NUL byte, which environment variables cannot hold"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn slices_adapt_towards_the_target_within_bounds() {
        assert_eq!(next_slice(1000, Duration::from_micros(100)), 10_000);
        assert_eq!(next_slice(20_000, Duration::from_micros(100)), 40_000);
        assert_eq!(next_slice(20_000, Duration::from_millis(10)), 20_000);
        assert_eq!(next_slice(20_000, Duration::from_millis(50)), 10_000);
        assert_eq!(next_slice(10_000, Duration::from_secs(1)), MIN_SLICE);
        assert_eq!(next_slice(MAX_SLICE, Duration::ZERO), MAX_SLICE);
    }

    #[test]
    fn secret_names_must_be_env_names() {
        assert!(validate_secrets(&secrets(&[("API_KEY", "x"), ("_a1", "y")])).is_ok());
        for bad in ["1ABC", "A-B", "", "A B", "É"] {
            let error = validate_secrets(&secrets(&[(bad, "x")])).unwrap_err();
            assert_eq!(error.kind(), "invalidSecrets", "{bad:?}");
        }
    }

    #[test]
    fn secrets_cannot_shadow_system_vars() {
        let error = validate_secrets(&secrets(&[("NEAR_SENDER_ID", "mallory.near")])).unwrap_err();
        assert!(error.to_string().contains("NEAR_SENDER_ID"));
        assert!(error.to_string().contains("collides"));
    }
}
