// The legacy app of the browser test, as a typical Express app of this kind is written: a login form,
// passport-local, express-session with its sessions in Redis through connect-redis (prefix "sess:", the
// user id at passport.user). Users come from USERS_FILE (JSON [{id, username, password, name}]), so the
// test can give the same users to Express and to Laravel's users table.
"use strict";

const fs = require("fs");
const express = require("express");
const session = require("express-session");
const RedisStore = require("connect-redis").default;
const { createClient } = require("redis");
const passport = require("passport");
const LocalStrategy = require("passport-local").Strategy;

const port = Number(process.env.PORT || 3001);
const users = JSON.parse(fs.readFileSync(process.env.USERS_FILE, "utf8"));
const secrets = (process.env.SESSION_SECRETS || "").split(",").filter(Boolean);
if (!secrets.length) throw new Error("SESSION_SECRETS is required");

const escape = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

passport.use(new LocalStrategy((username, password, done) => {
  const user = users.find((u) => u.username === username && u.password === password);
  return done(null, user || false);
}));
passport.serializeUser((user, done) => done(null, user.id));
passport.deserializeUser((id, done) => done(null, users.find((u) => u.id === id) || false));

async function main() {
  const redis = createClient({ url: process.env.REDIS_URL });
  redis.on("error", (err) => console.error("redis:", err.message));
  await redis.connect();

  const app = express();
  app.use(express.urlencoded({ extended: false }));
  app.use(session({
    store: new RedisStore({ client: redis }),
    secret: secrets,
    resave: false,
    saveUninitialized: false,
    cookie: { httpOnly: true, sameSite: "lax", maxAge: 24 * 3600 * 1000 },
  }));
  app.use(passport.initialize());
  app.use(passport.session());

  app.get("/", (req, res) => {
    const who = req.user ? `<p id="who">logged in as ${escape(req.user.username)}</p>` +
      `<form method="post" action="/logout"><button>Log out</button></form>`
      : `<p id="who">not logged in</p>
         <form method="post" action="/login">
           <label>Username <input name="username" id="username"></label>
           <label>Password <input name="password" id="password" type="password"></label>
           <button id="login">Log in</button>
         </form>`;
    res.send(`<!doctype html><html><head><title>Legacy Express app</title></head>
      <body style="font-family: sans-serif"><h1>Legacy Express app</h1>${who}</body></html>`);
  });
  app.post("/login", passport.authenticate("local", { successRedirect: "/", failureRedirect: "/?failed=1" }));
  app.post("/logout", (req, res, next) => req.logout((err) => (err ? next(err) : res.redirect("/"))));

  app.listen(port, "127.0.0.1", () => console.log(`express app listening on http://127.0.0.1:${port}`));
}

main().catch((err) => { console.error(err); process.exit(1); });
