//! An example OutLayer client: the kind of contract OutLayer's users write.
//!
//! [`Contract::ask`] forwards the caller's deposit to the OutLayer contract's `request_execution` and
//! chains [`Contract::on_answer`] on itself. OutLayer parks the request until its operator answers (or
//! NEAR's 200-block yield window passes), then settles the deposit and returns the output — or `null`
//! on failure or timeout — to `on_answer`, which records it under the question's id.
//!
//! Money: OutLayer refunds what the execution did not use to the account that called
//! `request_execution`, which is this contract. This example keeps those refunds (they pay for the
//! storage its answers take); only a request OutLayer rejected outright is paid back to the asker.

use near_sdk::store::LookupMap;
use near_sdk::{
    AccountId, BorshStorageKey, Gas, NearToken, PanicOnDefault, Promise, PromiseError, env, near,
    require,
};
use serde_json::value::RawValue;

pub mod outlayer;

pub use crate::outlayer::{CodeSource, ResourceLimits, ResponseFormat, ext_outlayer};

/// OutLayer's `request_execution` refuses less than 30 Tgas (20 of them are reserved for its own
/// callback). Gas left over by `ask` is added to this call, so attaching more only helps it.
pub const REQUEST_EXECUTION_GAS: Gas = Gas::from_tgas(30);
/// `on_answer`: storing up to [`MAX_STORED_OUTPUT_BYTES`], an event, at most one transfer. It burnt
/// 1.5–1.8 Tgas on the localnet (nearcore's VM and fees); the rest is headroom.
pub const ON_ANSWER_GAS: Gas = Gas::from_tgas(10);
/// `ask`'s own work (parsing the input, one state write, creating two receipts). Burnt on the localnet:
/// 2.2 Tgas with a small input, 35 Tgas with a 250,000-byte one (reading and re-encoding the input).
pub const ASK_GAS: Gas = Gas::from_tgas(10);
/// The least `ask` accepts (50 Tgas). 100 Tgas covers inputs up to OutLayer's 256 KiB limit (measured:
/// a 250,000-byte input needed about 80); a request that runs out of gas fails and is refunded.
pub const MIN_ASK_GAS: Gas = ASK_GAS
    .saturating_add(REQUEST_EXECUTION_GAS)
    .saturating_add(ON_ANSWER_GAS);
/// This contract pays for storing answers from its own balance, so it keeps only this much of an
/// output (as JSON). A longer one is recorded as a failure saying so.
pub const MAX_STORED_OUTPUT_BYTES: usize = 2048;

/// Limits used when `ask` leaves them out: enough for a small program, cheap to deposit for.
pub const DEFAULT_LIMITS: ResourceLimits = ResourceLimits {
    max_instructions: 1_000_000_000,
    max_memory_mb: 128,
    max_execution_seconds: 10,
};

#[near]
#[derive(BorshStorageKey)]
pub enum StorageKey {
    Questions,
}

/// Where a question stands.
#[near(serializers = [borsh, json])]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    Answered,
    Failed,
}

#[near(serializers = [borsh])]
#[derive(Clone, Debug)]
pub struct Question {
    pub asker: AccountId,
    /// What the asker attached; returned to them if OutLayer rejects the request.
    pub deposit: NearToken,
    pub status: Status,
    /// The output as the JSON OutLayer returned (a string for Text and Bytes, any value for Json).
    pub output: Option<String>,
    pub error: Option<String>,
}

/// A question as `get_answer` and `last_answer` show it.
#[near(serializers = [json])]
#[derive(Clone, Debug)]
pub struct AnswerView {
    pub question_id: u64,
    pub asker: AccountId,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// NEP-297 events, so an indexer can follow questions without reading state.
#[near(event_json(standard = "outlayer-client-example"))]
pub enum ClientEvent {
    #[event_version("1.0.0")]
    QuestionAsked { question_id: u64, asker: AccountId },
    #[event_version("1.0.0")]
    AnswerRecorded {
        question_id: u64,
        status: Status,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

const NO_OUTPUT: &str = "OutLayer returned no output: the execution failed or the operator did not \
    answer within the yield window (OutLayer's execution_completed event says which); OutLayer kept \
    its base fee and refunded the rest to this contract";

#[near(contract_state)]
#[derive(PanicOnDefault)]
pub struct Contract {
    outlayer_id: AccountId,
    next_question_id: u64,
    last_answered: Option<u64>,
    questions: LookupMap<u64, Question>,
}

#[near]
impl Contract {
    #[init]
    pub fn new(outlayer_id: AccountId) -> Self {
        Self {
            outlayer_id,
            next_question_id: 0,
            last_answered: None,
            questions: LookupMap::new(StorageKey::Questions),
        }
    }

    /// Asks OutLayer to run `repo` at `commit` on `input`. Attach at least OutLayer's
    /// `estimate_execution_cost` for the limits plus the storage of the pending request (input length
    /// + ~400 bytes at 1e19 yocto each) and at least 50 Tgas. The transaction ends with the recorded
    /// answer.
    #[payable]
    #[allow(clippy::too_many_arguments)]
    pub fn ask(
        &mut self,
        repo: String,
        commit: String,
        input: String,
        max_instructions: Option<u64>,
        max_memory_mb: Option<u32>,
        max_execution_seconds: Option<u64>,
        response_format: Option<ResponseFormat>,
    ) -> Promise {
        let deposit = env::attached_deposit();
        require!(
            !deposit.is_zero(),
            "attach a deposit: OutLayer's estimate_execution_cost for the limits plus the storage of \
             the pending request"
        );
        if env::prepaid_gas() < MIN_ASK_GAS {
            env::panic_str(&format!(
                "attach at least {} Tgas (100 Tgas is comfortable), got {} Tgas",
                MIN_ASK_GAS.as_tgas(),
                env::prepaid_gas().as_tgas()
            ));
        }
        let limits = ResourceLimits {
            max_instructions: max_instructions.unwrap_or(DEFAULT_LIMITS.max_instructions),
            max_memory_mb: max_memory_mb.unwrap_or(DEFAULT_LIMITS.max_memory_mb),
            max_execution_seconds: max_execution_seconds
                .unwrap_or(DEFAULT_LIMITS.max_execution_seconds),
        };

        let question_id = self.next_question_id;
        self.next_question_id += 1;
        let asker = env::predecessor_account_id();
        self.questions.insert(
            question_id,
            Question {
                asker: asker.clone(),
                deposit,
                status: Status::Pending,
                output: None,
                error: None,
            },
        );
        ClientEvent::QuestionAsked { question_id, asker }.emit();

        let code_source = CodeSource {
            repo,
            commit,
            build_target: None,
        };
        ext_outlayer::ext(self.outlayer_id.clone())
            .with_attached_deposit(deposit)
            .with_static_gas(REQUEST_EXECUTION_GAS)
            .request_execution(code_source, limits, input, response_format)
            .then(
                Self::ext_self()
                    .with_static_gas(ON_ANSWER_GAS)
                    .with_unused_gas_weight(0)
                    .on_answer(question_id),
            )
    }

    /// OutLayer's answer to `question_id`: the output, `null` (the execution failed or timed out), or
    /// a failed promise (OutLayer rejected the request, e.g. too small a deposit, and returned it).
    #[private]
    pub fn on_answer(
        &mut self,
        question_id: u64,
        #[callback_result] answer: Result<Option<Box<RawValue>>, PromiseError>,
    ) -> AnswerView {
        let Some(question) = self.questions.get_mut(&question_id) else {
            env::panic_str(&format!("question {question_id} does not exist"))
        };
        let (status, output, error) = match answer {
            Ok(Some(output)) if output.get().len() <= MAX_STORED_OUTPUT_BYTES => {
                (Status::Answered, Some(output.get().to_string()), None)
            }
            Ok(Some(output)) => (
                Status::Failed,
                None,
                Some(format!(
                    "the output is {} bytes of JSON; this contract keeps at most {MAX_STORED_OUTPUT_BYTES}",
                    output.get().len()
                )),
            ),
            Ok(None) => (Status::Failed, None, Some(NO_OUTPUT.to_string())),
            Err(_) => {
                // A rejected request_execution sent the whole deposit back to this contract.
                Promise::new(question.asker.clone())
                    .transfer(question.deposit)
                    .detach();
                let error = format!(
                    "OutLayer rejected the request (its failed receipt says why); the deposit of {} \
                     yoctoNEAR went back to {}",
                    question.deposit.as_yoctonear(),
                    question.asker
                );
                (Status::Failed, None, Some(error))
            }
        };
        question.status = status;
        question.output = output;
        question.error = error.clone();
        let view = answer_view(question_id, question);
        self.last_answered = Some(question_id);
        ClientEvent::AnswerRecorded {
            question_id,
            status,
            error,
        }
        .emit();
        view
    }

    pub fn get_answer(&self, question_id: u64) -> Option<AnswerView> {
        self.questions
            .get(&question_id)
            .map(|question| answer_view(question_id, question))
    }

    /// The question answered (or failed) most recently.
    pub fn last_answer(&self) -> Option<AnswerView> {
        self.last_answered.and_then(|id| self.get_answer(id))
    }

    pub fn get_outlayer_id(&self) -> AccountId {
        self.outlayer_id.clone()
    }
}

fn answer_view(question_id: u64, question: &Question) -> AnswerView {
    // Stored from a `RawValue`, so it is valid JSON; a corrupt record is an invariant broken.
    let output = question.output.as_ref().map(|json| {
        RawValue::from_string(json.clone()).unwrap_or_else(|e| {
            env::panic_str(&format!(
                "stored output of question {question_id} is not JSON: {e}"
            ))
        })
    });
    AnswerView {
        question_id,
        asker: question.asker.clone(),
        status: question.status,
        output,
        error: question.error.clone(),
    }
}

#[cfg(test)]
mod tests;
