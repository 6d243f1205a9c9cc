// Refunds the order with the sandbox's button on its landing page, as a merchant would from
// the Stripe Dashboard, and waits for the page to show the reversal Stripe's webhook brings.
// Usage: node refund.cjs BASE_URL SESSION_ID [SCREENSHOT_DIR]
const { launch } = require('./chromium.cjs');

async function main() {
  const [base, session, shots] = process.argv.slice(2);
  const browser = await launch();
  try {
    const page = await browser.newPage({ viewport: { width: 1000, height: 720 } });
    await page.goto(`${base}/after-checkout?session_id=${session}`);
    // The operator refunded 1.00 of it from /admin (admin.cjs); this refunds the rest.
    await page.getByRole('heading', { name: 'Order partly refunded' }).waitFor();
    await page.getByRole('button', { name: 'Refund this order (sandbox)' }).click();
    await page.waitForURL(/\/after-checkout\?session_id=cs_test_/);
    const refunded = page.getByRole('heading', { name: 'Order refunded' });
    for (let tries = 0; !(await refunded.isVisible()); tries += 1) {
      if (tries === 50) throw new Error('the refund never showed on the landing page');
      await page.waitForTimeout(200);
      await page.reload();
    }
    await page.getByText('$50.00').first().waitFor();
    await page.getByText('Cancelled: the order was refunded before it shipped.').waitFor();
    if (await page.getByRole('button', { name: 'Refund this order (sandbox)' }).count()) {
      throw new Error('a refunded order still offers a refund');
    }
    if (shots) await page.screenshot({ path: `${shots}/refunded.png`, fullPage: true });
  } finally {
    await browser.close();
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
