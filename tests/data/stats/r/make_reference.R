# Reference numbers for hypo.stats, computed once with R from Debian packages
# (r-base-core, r-cran-mass, r-cran-ordinal, r-cran-vgam) and committed beside this script;
# the test suite only reads the CSV files written here (tests/test_stats_r_reference.py).
#
#   cd tests/data/stats/r && Rscript make_reference.R
#
# Inputs (in tests/data/stats/): wine.csv (ordinal's wine data), housing.csv (MASS's
# housing data with frequencies) and mrs_ppo.csv (400 simulated patients: mRS 0-6, a 0/1
# `treated` whose effect grows with the cut -- not proportional odds -- and a standardised
# `age_z`; drawn once with numpy, seed 5, and committed as data).
#
# Sign convention of every number below is hypo's: logit P(Y <= j) = theta_j - x'beta, so a
# positive coefficient (OR > 1) means a higher (worse) level. polr uses the same; clm's
# nominal effects and VGAM's cumulative() coefficients are negated to match.
suppressPackageStartupMessages({
  library(MASS)
  library(ordinal)
  library(VGAM)
})
options(digits = 15)
here <- "."
data_dir <- ".."

wine <- read.csv(file.path(data_dir, "wine.csv"))
wine$rating <- factor(wine$rating, levels = 1:5, ordered = TRUE)
wine$temp <- factor(wine$temp, levels = c("cold", "warm"))
wine$contact <- factor(wine$contact, levels = c("no", "yes"))

housing <- read.csv(file.path(data_dir, "housing.csv"))
housing$Sat <- factor(housing$Sat, levels = c("Low", "Medium", "High"), ordered = TRUE)
housing$Infl <- factor(housing$Infl, levels = c("Low", "Medium", "High"))
housing$Type <- factor(housing$Type, levels = c("Tower", "Apartment", "Atrium", "Terrace"))
housing$Cont <- factor(housing$Cont, levels = c("Low", "High"))

mrs <- read.csv(file.path(data_dir, "mrs_ppo.csv"))
mrs$mrs <- factor(mrs$mrs, levels = 0:6, ordered = TRUE)

ctl <- list(reltol = 1e-14, maxit = 10000)
fits <- list(
  wine = list(formula = rating ~ temp + contact, data = wine, weights = NULL),
  housing = list(formula = Sat ~ Infl + Type + Cont, data = housing, weights = "Freq"),
  mrs_ppo = list(formula = mrs ~ treated + age_z, data = mrs, weights = NULL)
)

fit_polr <- function(f) {
  w <- if (is.null(f$weights)) NULL else f$data[[f$weights]]
  environment(f$formula) <- environment()
  d <- f$data
  d$.w <- if (is.null(w)) rep(1, nrow(d)) else w
  polr(f$formula, data = d, weights = .w, Hess = TRUE, control = ctl)
}

# Exact profile: twice the log-likelihood drop with coefficient k fixed at b (as an offset)
# and every other parameter refitted; each end found by uniroot to 1e-10.
exact_profile <- function(fit, f, k, level = 0.95) {
  d <- f$data
  w <- if (is.null(f$weights)) rep(1, nrow(d)) else d[[f$weights]]
  X <- model.matrix(fit)[, -1, drop = FALSE]
  y <- model.response(model.frame(fit))
  ll_hat <- as.numeric(logLik(fit))
  q <- qchisq(level, 1)
  b_hat <- coef(fit)[k]
  se <- sqrt(diag(vcov(fit)))[k]
  rest <- X[, -k, drop = FALSE]
  start <- c(coef(fit)[-k], fit$zeta)
  dev <- function(b) {
    off <- X[, k] * b
    pf <- polr(y ~ rest + offset(off), weights = w, start = start, control = ctl)
    2 * (ll_hat - as.numeric(logLik(pf))) - q
  }
  lo <- uniroot(dev, c(b_hat - 8 * se, b_hat), tol = 1e-10)$root
  hi <- uniroot(dev, c(b_hat, b_hat + 8 * se), tol = 1e-10)$root
  c(lo, hi)
}

# R's coefficient names ("tempwarm") in patsy's spelling ("temp[T.warm]"), as hypo names them.
patsy_name <- function(terms, data) {
  out <- terms
  for (v in names(data)) {
    if (!is.factor(data[[v]]) || is.ordered(data[[v]])) next
    for (lv in levels(data[[v]])) out[terms == paste0(v, lv)] <- paste0(v, "[T.", lv, "]")
  }
  out
}

coef_rows <- list()
cut_rows <- list()
ci_rows <- list()
for (name in names(fits)) {
  f <- fits[[name]]
  fit <- fit_polr(f)
  se <- sqrt(diag(vcov(fit)))
  b <- coef(fit)
  coef_rows[[name]] <- data.frame(dataset = name, term = patsy_name(names(b), f$data),
                                  estimate = unname(b),
                                  se = unname(se[names(b)]), loglik = as.numeric(logLik(fit)))
  cut_rows[[name]] <- data.frame(dataset = name, cut = names(fit$zeta),
                                 estimate = unname(fit$zeta))
  mass <- suppressMessages(confint(fit))  # MASS: profile, spline-interpolated
  mass <- matrix(mass, ncol = 2, dimnames = list(names(b), NULL))
  for (k in seq_along(b)) {
    ex <- exact_profile(fit, f, k)
    ci_rows[[paste(name, k)]] <- data.frame(
      dataset = name, term = patsy_name(names(b)[k], f$data), mass_low = mass[k, 1], mass_high = mass[k, 2],
      exact_low = ex[1], exact_high = ex[2])
  }
}
write.csv(do.call(rbind, coef_rows), file.path(here, "polr_coef.csv"), row.names = FALSE)
write.csv(do.call(rbind, cut_rows), file.path(here, "polr_cuts.csv"), row.names = FALSE)
write.csv(do.call(rbind, ci_rows), file.path(here, "polr_profile_ci.csv"), row.names = FALSE)

# Partial proportional odds: cut-specific effects of one term (ordinal::clm nominal=,
# checked against VGAM::vglm cumulative(parallel = FALSE ~ term)), and the LR test against
# the proportional-odds fit.
ppo <- list(
  # (temp is not used: no warm wine is rated 1 and no cold one 5, so its 1|2 and 4|5
  # effects diverge and the programs stop at different points.)
  list(dataset = "wine", formula = rating ~ temp, nominal = ~contact, term = "contact",
       column = "contact[T.yes]", rcol = "contactyes", data = wine,
       vglm_formula = rating ~ temp + contact, parallel = FALSE ~ contact,
       po = rating ~ temp + contact),
  list(dataset = "mrs_ppo", formula = mrs ~ age_z, nominal = ~treated, term = "treated",
       column = "treated", rcol = "treated", data = mrs, vglm_formula = mrs ~ treated + age_z,
       parallel = FALSE ~ treated, po = mrs ~ treated + age_z)
)
ppo_rows <- list()
lr_rows <- list()
for (p in ppo) {
  full <- clm(p$formula, nominal = p$nominal, data = p$data,
              control = clm.control(gradTol = 1e-10, relTol = 1e-12))
  po <- clm(p$po, data = p$data, control = clm.control(gradTol = 1e-10, relTol = 1e-12))
  nb <- coef(full)
  nse <- sqrt(diag(vcov(full)))
  lv <- levels(p$data[[as.character(p$formula[[2]])]])
  cuts <- paste(head(lv, -1), tail(lv, -1), sep = "|")
  vg <- vglm(p$vglm_formula, cumulative(parallel = p$parallel, reverse = FALSE),
             data = p$data, control = vglm.control(epsilon = 1e-12, maxit = 100))
  vb <- coef(vg)
  for (j in seq_along(cuts)) {
    nm <- paste0(cuts[j], ".", p$rcol)
    vnm <- paste0(p$rcol, ":", j)
    ppo_rows[[paste(p$dataset, j)]] <- data.frame(
      dataset = p$dataset, column = p$column, cut = cuts[j],
      estimate = -unname(nb[nm]), se = unname(nse[nm]), vglm_estimate = -unname(vb[vnm]))
  }
  chi2 <- 2 * (as.numeric(logLik(full)) - as.numeric(logLik(po)))
  df <- length(cuts) - 1
  lr_rows[[p$dataset]] <- data.frame(
    dataset = p$dataset, term = p$term, chi2 = chi2, df = df,
    p = pchisq(chi2, df, lower.tail = FALSE))
}
ppo_df <- do.call(rbind, ppo_rows)
stopifnot(max(abs(ppo_df$estimate - ppo_df$vglm_estimate)) < 1e-4)
write.csv(ppo_df, file.path(here, "partial_po.csv"), row.names = FALSE)
write.csv(do.call(rbind, lr_rows), file.path(here, "partial_po_lr.csv"), row.names = FALSE)

# Generalized odds ratio (Agresti 1980; ties excluded) and WMW odds (ties split) from the
# counts of all between-group pairs, base R only. CI: delta method on the log scale with the
# pair proportions' variance under two independent multinomial samples (placements, divisor n).
genor <- function(ref, cmp) {
  nx <- length(ref); ny <- length(cmp)
  s <- sign(outer(cmp, ref, "-"))          # rows: comparison patients, columns: reference
  higher <- sum(s > 0); lower <- sum(s < 0); tied <- sum(s == 0)
  pc <- higher / (nx * ny); pd <- lower / (nx * ny); pt <- tied / (nx * ny)
  vcov_pop <- function(a, b) {
    m <- cbind(a, b); n <- nrow(m)
    cov(m) * (n - 1) / n
  }
  V <- vcov_pop(rowMeans(s > 0), rowMeans(s < 0)) / ny +
       vcov_pop(colMeans(s > 0), colMeans(s < 0)) / nx
  g1 <- c(1 / pc, -1 / pd)
  w <- pc + pt / 2
  g2 <- c(0.5, -0.5) / (w * (1 - w))
  est <- c(pc / pd, w / (1 - w))
  se <- c(sqrt(drop(t(g1) %*% V %*% g1)), sqrt(drop(t(g2) %*% V %*% g2)))
  z <- qnorm(0.975)
  data.frame(measure = c("generalized_odds_ratio", "wmw_odds"), OR = est,
             OR_low = exp(log(est) - z * se), OR_high = exp(log(est) + z * se),
             p = 2 * pnorm(-abs(log(est)) / se),
             pairs_higher = higher, pairs_lower = lower, pairs_tied = tied)
}
mrs_int <- as.integer(as.character(mrs$mrs))
wine_int <- as.integer(as.character(wine$rating))
g <- rbind(
  cbind(dataset = "mrs_ppo_treated", genor(mrs_int[mrs$treated == 0], mrs_int[mrs$treated == 1])),
  cbind(dataset = "wine_temp", genor(wine_int[wine$temp == "cold"], wine_int[wine$temp == "warm"]))
)
write.csv(g, file.path(here, "generalized_or.csv"), row.names = FALSE)

# Utility-weighted mRS (Chaisinanunkul et al., Stroke 2015): mean difference treated - untreated.
uw <- c(1.0, 0.91, 0.76, 0.65, 0.33, 0, 0)
u <- uw[mrs_int + 1]
write.csv(data.frame(dataset = "mrs_ppo_treated", mean_reference = mean(u[mrs$treated == 0]),
                     mean_comparison = mean(u[mrs$treated == 1]),
                     difference = mean(u[mrs$treated == 1]) - mean(u[mrs$treated == 0]),
                     welch_p = t.test(u[mrs$treated == 1], u[mrs$treated == 0])$p.value),
          file.path(here, "utility_mrs.csv"), row.names = FALSE)

writeLines(c(R.version.string,
             paste("MASS", packageVersion("MASS")),
             paste("ordinal", packageVersion("ordinal")),
             paste("VGAM", packageVersion("VGAM"))),
           file.path(here, "versions.txt"))
