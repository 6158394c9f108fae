//! Yields a contract created and nobody has resumed yet. On NEAR these are postponed receipts in
//! the contract account's state; here the VM keeps them, so `promise_yield_resume` answers as the
//! chain does (true only for a pending yield of this account) across calls.

use std::collections::BTreeMap;

use near_crypto::PublicKey;
use near_primitives_core::hash::{CryptoHash, YieldId};
use near_primitives_core::types::{AccountId, BlockHeight};

use crate::context::{CallContext, PromiseResult};
use crate::receipts::FunctionCall;

/// A yielded callback waiting for its resume or its timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingYield {
    pub data_id: CryptoHash,
    pub yield_id: Option<YieldId>,
    /// The contract that yielded; the callback runs on it.
    pub account_id: AccountId,
    pub callback: FunctionCall,
    /// Signer of the transaction that created the yield; the callback runs on its behalf.
    pub signer: AccountId,
    pub signer_public_key: PublicKey,
    pub created_at: BlockHeight,
}

impl PendingYield {
    /// The context the chain runs the callback with: predecessor = the contract itself, the
    /// callback's prepaid gas, and one promise result (the resume payload, or `Failed` on
    /// timeout).
    pub fn callback_context(
        &self,
        result: PromiseResult,
        block_height: BlockHeight,
        block_timestamp: u64,
    ) -> CallContext {
        let mut ctx = CallContext::callback(self.account_id.clone(), self.signer.clone())
            .with_gas(self.callback.gas)
            .with_deposit(self.callback.deposit)
            .at_block(block_height, block_timestamp)
            .with_promise_results(vec![result]);
        ctx.signer_public_key = self.signer_public_key.clone();
        ctx
    }

    /// Whether NEAR would have timed this yield out by `block_height`.
    pub fn is_timed_out(&self, block_height: BlockHeight, timeout_blocks: u64) -> bool {
        block_height >= self.created_at.saturating_add(timeout_blocks)
    }
}

/// A `promise_yield_resume` that found its pending yield: the chain now runs `yielded.callback`
/// with `payload` as its promise result (see [`PendingYield::callback_context`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YieldResume {
    pub data_id: CryptoHash,
    pub payload: Vec<u8>,
    pub yielded: PendingYield,
}

#[derive(Debug, Default, Clone)]
pub(crate) struct YieldRegistry {
    pending: BTreeMap<CryptoHash, PendingYield>,
}

impl YieldRegistry {
    pub(crate) fn get(&self, data_id: &CryptoHash) -> Option<&PendingYield> {
        self.pending.get(data_id)
    }

    pub(crate) fn find_by_yield_id(&self, yield_id: &YieldId) -> Option<&PendingYield> {
        self.pending
            .values()
            .find(|pending| pending.yield_id.as_ref() == Some(yield_id))
    }

    pub(crate) fn insert(&mut self, pending: PendingYield) {
        self.pending.insert(pending.data_id, pending);
    }

    pub(crate) fn remove(&mut self, data_id: &CryptoHash) -> Option<PendingYield> {
        self.pending.remove(data_id)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &PendingYield> {
        self.pending.values()
    }

    pub(crate) fn take_timed_out(
        &mut self,
        block_height: BlockHeight,
        timeout_blocks: u64,
    ) -> Vec<PendingYield> {
        let expired: Vec<CryptoHash> = self
            .pending
            .values()
            .filter(|pending| pending.is_timed_out(block_height, timeout_blocks))
            .map(|pending| pending.data_id)
            .collect();
        expired
            .iter()
            .filter_map(|data_id| self.pending.remove(data_id))
            .collect()
    }
}
