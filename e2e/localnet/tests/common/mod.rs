//! What the localnet's test files share: a JSON-RPC client with the calls they make (queries, signing
//! with the key's next nonce, sending, final outcomes) and the actions they build.
// Each test binary includes this module and uses a subset of it.
#![allow(dead_code)]

use std::time::Duration;

use near_crypto::SecretKey;
use near_jsonrpc_client::{JsonRpcClient, methods};
use near_jsonrpc_primitives::types::query::QueryResponseKind;
use near_jsonrpc_primitives::types::transactions::TransactionInfo;
use near_primitives::action::{Action, FunctionCallAction};
use near_primitives::hash::CryptoHash;
use near_primitives::transaction::{SignedTransaction, Transaction, TransactionV0};
use near_primitives::types::{
    AccountId, Balance, BlockId, BlockReference, Finality, FunctionArgs, Gas,
};
use near_primitives::views::{
    FinalExecutionOutcomeView, FinalExecutionOutcomeViewEnum, QueryRequest, TxExecutionStatus,
};
use outlayer_testkit::near::Key;
use serde_json::Value;

/// Generous: waits end on conditions, this only bounds a hung test.
pub const DEADLINE: Duration = Duration::from_secs(120);

/// A JSON-RPC client for the localnet, with the calls the tests make.
pub struct Rpc {
    pub client: JsonRpcClient,
}

impl Rpc {
    pub fn connect(url: &str) -> Self {
        Self {
            client: JsonRpcClient::connect(url),
        }
    }

    pub async fn query(&self, request: QueryRequest) -> QueryResponseKind {
        self.client
            .call(methods::query::RpcQueryRequest {
                block_reference: BlockReference::Finality(Finality::Final),
                request,
            })
            .await
            .unwrap()
            .kind
    }

    pub async fn balance(&self, account_id: &AccountId) -> u128 {
        match self
            .query(QueryRequest::ViewAccount {
                account_id: account_id.clone(),
            })
            .await
        {
            QueryResponseKind::ViewAccount(view) => view.amount.as_yoctonear(),
            other => panic!("expected an account view, got {other:?}"),
        }
    }

    pub async fn nonce(&self, key: &Key) -> u64 {
        match self
            .query(QueryRequest::ViewAccessKey {
                account_id: key.account_id.clone(),
                public_key: key.public_key(),
            })
            .await
        {
            QueryResponseKind::AccessKey(view) => view.nonce,
            other => panic!("expected an access key view, got {other:?}"),
        }
    }

    /// A view call's JSON result.
    pub async fn view_on(&self, contract: &AccountId, method: &str, args: Value) -> Value {
        let request = QueryRequest::CallFunction {
            account_id: contract.clone(),
            method_name: method.to_string(),
            args: FunctionArgs::from(serde_json::to_vec(&args).unwrap()),
        };
        match self.query(request).await {
            QueryResponseKind::CallResult(result) => {
                serde_json::from_slice(&result.result).unwrap()
            }
            other => panic!("expected a call result, got {other:?}"),
        }
    }

    pub async fn final_block_hash(&self) -> CryptoHash {
        self.client
            .call(methods::block::RpcBlockRequest {
                block_reference: BlockReference::Finality(Finality::Final),
            })
            .await
            .unwrap()
            .header
            .hash
    }

    pub async fn block_height_of(&self, block_hash: CryptoHash) -> u64 {
        self.client
            .call(methods::block::RpcBlockRequest {
                block_reference: BlockReference::BlockId(BlockId::Hash(block_hash)),
            })
            .await
            .unwrap()
            .header
            .height
    }

    /// Signs with the key's next nonce and the final block, as the operator does.
    pub async fn sign(
        &self,
        key: &Key,
        receiver: &AccountId,
        actions: Vec<Action>,
    ) -> SignedTransaction {
        let nonce = self.nonce(key).await + 1;
        self.sign_with(
            key,
            &key.secret,
            nonce,
            self.final_block_hash().await,
            receiver,
            actions,
        )
    }

    /// A transaction from `key`'s account signed with `signing_secret` (which may not be `key`'s).
    pub fn sign_with(
        &self,
        key: &Key,
        signing_secret: &SecretKey,
        nonce: u64,
        block_hash: CryptoHash,
        receiver: &AccountId,
        actions: Vec<Action>,
    ) -> SignedTransaction {
        let tx = Transaction::V0(TransactionV0 {
            signer_id: key.account_id.clone(),
            public_key: key.public_key(),
            nonce,
            receiver_id: receiver.clone(),
            block_hash,
            actions,
        });
        let (hash, _) = tx.get_hash_and_size();
        SignedTransaction::new(signing_secret.sign(hash.as_ref()), tx)
    }

    /// Hands `tx` to the node without waiting (`broadcast_tx_async`); its hash.
    pub async fn send(&self, tx: SignedTransaction) -> CryptoHash {
        self.client
            .call(methods::broadcast_tx_async::RpcBroadcastTxAsyncRequest {
                signed_transaction: tx,
            })
            .await
            .unwrap()
    }

    pub async fn commit(&self, tx: SignedTransaction) -> FinalExecutionOutcomeView {
        self.client
            .call(methods::broadcast_tx_commit::RpcBroadcastTxCommitRequest {
                signed_transaction: tx,
            })
            .await
            .unwrap()
    }

    /// The final outcome of a transaction, with its receipts, once everything it caused (refunds
    /// included) ran.
    pub async fn final_outcome(
        &self,
        tx_hash: CryptoHash,
        sender: &AccountId,
    ) -> FinalExecutionOutcomeView {
        #[allow(deprecated)]
        let request = methods::EXPERIMENTAL_tx_status::RpcTransactionStatusRequest {
            transaction_info: TransactionInfo::TransactionId {
                tx_hash,
                sender_account_id: sender.clone(),
            },
            wait_until: TxExecutionStatus::Final,
        };
        let response = tokio::time::timeout(DEADLINE, self.client.call(request))
            .await
            .expect("the transaction did not finish in time")
            .unwrap();
        assert_eq!(response.final_execution_status, TxExecutionStatus::Final);
        match response.final_execution_outcome {
            Some(FinalExecutionOutcomeViewEnum::FinalExecutionOutcomeWithReceipt(outcome)) => {
                assert_eq!(
                    outcome.receipts.len(),
                    outcome.final_outcome.receipts_outcome.len(),
                    "every receipt of the transaction has its view"
                );
                outcome.final_outcome
            }
            other => panic!("expected an outcome with receipts, got {other:?}"),
        }
    }
}

pub fn function_call(method: &str, args: &Value, tgas: u64, deposit: u128) -> Action {
    Action::FunctionCall(Box::new(FunctionCallAction {
        method_name: method.to_string(),
        args: serde_json::to_vec(args).unwrap(),
        gas: Gas::from_teragas(tgas),
        deposit: Balance::from_yoctonear(deposit),
    }))
}

/// yoctoNEAR burnt by the transaction and every receipt it caused.
pub fn tokens_burnt(outcome: &FinalExecutionOutcomeView) -> u128 {
    std::iter::once(&outcome.transaction_outcome)
        .chain(&outcome.receipts_outcome)
        .map(|o| o.outcome.tokens_burnt.as_yoctonear())
        .sum()
}
