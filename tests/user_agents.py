"""The User-Agent strings tests send: browsers the function counts and bots it does not.

requests' own agent is rightly taken for a bot, so a test that stands in for a visitor sends
BROWSER. tests/test_bots.py checks that crawlerdetect judges every agent here as this file says.
"""

from __future__ import annotations

BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
BROWSERS = {
    "firefox-linux": BROWSER,
    "chrome-windows": CHROME,
    "firefox-mac": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:133.0) "
    "Gecko/20100101 Firefox/133.0",
    "safari-mac": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "safari-iphone": "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) "
    "AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "chrome-android": "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/131.0.6778.135 Mobile Safari/537.36",
    "edge-windows": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.2903.86",
    "samsung-internet": "Mozilla/5.0 (Linux; Android 14; SM-S921B) AppleWebKit/537.36 "
    "(KHTML, like Gecko) SamsungBrowser/26.0 Chrome/122.0.0.0 Mobile Safari/537.36",
}
BOTS = {
    "empty": "",
    "googlebot": "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "bingbot": "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "slack-preview": "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    "facebook-preview": "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "twitter-preview": "Twitterbot/1.0",
    "discord-preview": "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
    "curl": "curl/8.5.0",
    # The API testers a tutorial reaches for: Postman's own agent, and HTTPie's.
    "postman": "PostmanRuntime/7.43.0",
    "httpie": "HTTPie/3.2.4",
    "headless-chrome": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "HeadlessChrome/131.0.0.0 Safari/537.36",
}
