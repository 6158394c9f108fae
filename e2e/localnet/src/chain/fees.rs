//! The gas nearcore charges around the VM for the actions we model: receipt creation
//! (`send`, burnt by whoever creates the receipt) and execution (`exec`, prepaid by the creator,
//! burnt when the receipt is applied).

use near_parameters::{ActionCosts, RuntimeFeesConfig};
use near_primitives::action::Action;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReceiptFees {
    pub send: u64,
    pub exec: u64,
}

/// Fees of one action receipt carrying `actions` (the `new_action_receipt` fee included).
/// Actions we do not model add nothing here; the receipt fails when it is applied.
pub fn receipt_fees(
    fees: &RuntimeFeesConfig,
    actions: &[Action],
    sender_is_receiver: bool,
) -> ReceiptFees {
    let mut total = one(fees, ActionCosts::new_action_receipt, 1, sender_is_receiver);
    for action in actions {
        let part = match action {
            Action::Transfer(_) => one(fees, ActionCosts::transfer, 1, sender_is_receiver),
            Action::FunctionCall(call) => {
                let bytes = (call.method_name.len() as u64).saturating_add(call.args.len() as u64);
                let base = one(fees, ActionCosts::function_call_base, 1, sender_is_receiver);
                let per_byte = one(
                    fees,
                    ActionCosts::function_call_byte,
                    bytes,
                    sender_is_receiver,
                );
                add(base, per_byte)
            }
            Action::CreateAccount(_) => {
                one(fees, ActionCosts::create_account, 1, sender_is_receiver)
            }
            Action::DeleteKey(_) => one(fees, ActionCosts::delete_key, 1, sender_is_receiver),
            Action::AddKey(add_key) => {
                match add_key.access_key.permission.function_call_permission() {
                    // nearcore charges a function-call key per byte of its method names (+1 each).
                    Some(permission) => {
                        let bytes = permission
                            .method_names
                            .iter()
                            .map(|name| name.len() as u64 + 1)
                            .fold(0u64, u64::saturating_add);
                        add(
                            one(
                                fees,
                                ActionCosts::add_function_call_key_base,
                                1,
                                sender_is_receiver,
                            ),
                            one(
                                fees,
                                ActionCosts::add_function_call_key_byte,
                                bytes,
                                sender_is_receiver,
                            ),
                        )
                    }
                    None => one(
                        fees,
                        ActionCosts::add_full_access_key,
                        1,
                        sender_is_receiver,
                    ),
                }
            }
            _ => ReceiptFees::default(),
        };
        total = add(total, part);
    }
    total
}

/// Gas prepaid to the receipt's function calls (what the VM may burn or pass on).
pub fn attached_gas(actions: &[Action]) -> u64 {
    actions
        .iter()
        .map(|action| match action {
            Action::FunctionCall(call) => call.gas.as_gas(),
            _ => 0,
        })
        .fold(0u64, u64::saturating_add)
}

/// Deposits the receipt moves to its receiver.
pub fn total_deposit(actions: &[Action]) -> u128 {
    actions
        .iter()
        .map(|action| match action {
            Action::Transfer(transfer) => transfer.deposit.as_yoctonear(),
            Action::FunctionCall(call) => call.deposit.as_yoctonear(),
            _ => 0,
        })
        .fold(0u128, u128::saturating_add)
}

fn one(fees: &RuntimeFeesConfig, cost: ActionCosts, times: u64, sir: bool) -> ReceiptFees {
    let fee = fees.fee(cost);
    ReceiptFees {
        send: fee.send_fee(sir).gas.as_gas().saturating_mul(times),
        exec: fee.exec_fee().gas.as_gas().saturating_mul(times),
    }
}

fn add(a: ReceiptFees, b: ReceiptFees) -> ReceiptFees {
    ReceiptFees {
        send: a.send.saturating_add(b.send),
        exec: a.exec.saturating_add(b.exec),
    }
}

/// yoctoNEAR for `gas` at `gas_price`.
pub fn gas_cost(gas: u64, gas_price: u128) -> u128 {
    u128::from(gas).saturating_mul(gas_price)
}
