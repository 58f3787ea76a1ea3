//! `mailgate user`: add, list and remove users in the users file or the users database.

use anyhow::Context;
use mailgate::config::Config;

use crate::cli::args::UserAction;

/// `mailgate user` on the users database (`[local] source`).
pub(crate) async fn sql_user_command(
    config: &Config,
    url: &str,
    action: UserAction,
) -> anyhow::Result<()> {
    use mailgate::store::sql_users::SqlUsers;
    use mailgate::store::users::{hash_password, Users};
    let password = config.resolve_opt(config.local.source_password_file.as_ref());
    let sql = SqlUsers::new(url, password.as_deref(), &config.local.queries)
        .map_err(anyhow::Error::msg)?;
    sql.ensure_schema().await.map_err(anyhow::Error::msg)?;
    let tables = sql.read().await.map_err(anyhow::Error::msg)?;
    let users = Users::build(&config.users_file(), tables, &config.local);
    match action {
        UserAction::Add { address, apop } => {
            anyhow::ensure!(
                !apop,
                "--apop needs the users file (APOP secrets are not kept in SQL)"
            );
            let address = users.new_user(&address)?;
            let hash = hash_password(&read_password()?)?;
            sql.add(&address, &hash).await.map_err(anyhow::Error::msg)?;
            eprintln!("added {address} to the users database");
        }
        UserAction::List => list_users(&users),
        UserAction::Remove { address } => {
            // The canonical spelling first, then the row exactly as given (an invalid or
            // colliding row is removed by its stored name).
            let canonical = mailgate::store::users::canonical(&address).map(|n| n.to_string());
            let mut removed = false;
            for name in canonical.iter().chain(std::iter::once(&address)) {
                if sql.remove(name).await.map_err(anyhow::Error::msg)? {
                    eprintln!("removed {name} from the users database");
                    removed = true;
                    break;
                }
            }
            anyhow::ensure!(removed, "no user {address}");
        }
    }
    Ok(())
}

/// `mailgate user list`: the users (canonical names) on standard output, and the rows that
/// serve no mailbox, with the reason, on standard error.
pub(crate) fn list_users(users: &mailgate::store::users::Users) {
    for user in users.list() {
        println!("{user}");
    }
    for row in users.refused() {
        eprintln!(
            "refused (serves no mailbox): {:?}: {}",
            row.address, row.reason
        );
    }
}

/// The password for `user add`: the first line of standard input.
pub(crate) fn read_password() -> anyhow::Result<String> {
    let mut password = String::new();
    std::io::stdin()
        .read_line(&mut password)
        .context("cannot read the password from standard input")?;
    let password = password.trim_end_matches(['\r', '\n']).to_string();
    anyhow::ensure!(
        !password.is_empty(),
        "empty password (give it on standard input)"
    );
    Ok(password)
}

pub(crate) fn user_command(config: &Config, action: UserAction) -> anyhow::Result<()> {
    use mailgate::store::users::Users;
    let path = config.users_file();
    let mut users = Users::load(&path, &config.local)?;
    match action {
        UserAction::Add { address, apop } => {
            // Checked before the password is asked for.
            users.new_user(&address)?;
            let password = read_password()?;
            let name = if apop {
                users.add_with_apop(&address, &password)?
            } else {
                users.add(&address, &password)?
            };
            eprintln!("added {name} to {}", path.display());
        }
        UserAction::List => list_users(&users),
        UserAction::Remove { address } => {
            users.remove(&address)?;
            eprintln!("removed {address} from {}", path.display());
        }
    }
    Ok(())
}
